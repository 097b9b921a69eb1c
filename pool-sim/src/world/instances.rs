//! Where the pools live: one shared pool, none (connection per request), or serverless
//! instances that each hold a pool, retire on a schedule and are reaped later.

use crate::client::Topology;
use crate::vtime::ns;

use super::event::Ev;
use super::Sim;

impl Sim {
    pub(super) fn open_hosts(&mut self) {
        match self.setup.topology.clone() {
            Topology::Shared => {
                let h = self.new_host();
                self.slots.push(h);
                self.open_replicas();
            }
            Topology::Direct => {}
            Topology::PerInstance {
                instances,
                lifetime,
                ..
            } => {
                for i in 0..instances {
                    let h = self.new_host();
                    self.slots.push(h);
                    // Stagger retirements so instances do not all turn over at once.
                    let first = ns(lifetime) / instances.max(1) as u64 * (i as u64 + 1);
                    self.queue
                        .push(ns(self.setup.warmup) + first, Ev::Retire(i));
                }
            }
        }
    }

    /// `Ev::Retire`: the instance in `slot` stops taking requests (its pool is frozen, its
    /// connections linger until it is reaped) and a fresh instance takes its place.
    pub(super) fn retire(&mut self, slot: usize) {
        let Topology::PerInstance {
            lifetime,
            zombie_ttl,
            ..
        } = self.setup.topology
        else {
            return;
        };
        let old = self.slots[slot];
        self.hosts[old].frozen = true;
        self.m.instances_retired += 1;
        self.queue.push(self.now + ns(zombie_ttl), Ev::Reap(old));
        let h = self.new_host();
        self.slots[slot] = h;
        self.queue.push(self.now + ns(lifetime), Ev::Retire(slot));
    }

    /// `Ev::Reap`: the platform kills a retired instance; the server sees its connections
    /// die.
    pub(super) fn reap(&mut self, h: usize) {
        let backends: Vec<u64> = self.hosts[h].conns.values().copied().collect();
        for b in backends {
            self.dbs[self.hosts[h].db].kill(b);
        }
        self.hosts[h].dead = true;
        // Requests still on it end with their instance.
        let waiting: Vec<usize> = self.hosts[h].pool.waiter_tokens().copied().collect();
        for req in waiting {
            self.m.lost_with_instance += 1;
            self.finish_request(req);
        }
    }
}
