//! Connection per request, no pool: each request connects, runs one query and disconnects
//! (the baseline the serverless scenario measures pools against).

use crate::db::{ConnectStart, Health};

use super::event::Ev;
use super::request::{Stage, RETRY_AFTER_REJECTION};
use super::Sim;

impl Sim {
    pub(super) fn connect_direct(&mut self, req: usize) {
        self.reqs[req].stage = Stage::Direct;
        let (lat, start) = self.dbs[0].start_connect(&mut self.rng);
        self.queue
            .push(self.now + lat, Ev::DirectConnected { req, start });
    }

    /// `Ev::DirectConnected`: the query runs, or the request fails as the pool would have
    /// said it (`connect_failed`).
    pub(super) fn direct_connected(&mut self, req: usize, start: ConnectStart) {
        match self.dbs[0].finish_connect(start) {
            Ok(backend) => {
                let wait = self.now - self.reqs[req].arrived;
                self.m.granted(wait);
                let d = self.dbs[0].spec.query.sample(&mut self.rng);
                self.queue
                    .push(self.now + d, Ev::DirectDone { req, backend });
            }
            Err(e) => {
                self.m
                    .rejected("connect_failed", || format!("cannot connect: {e}"));
                self.finish_request_after(req, RETRY_AFTER_REJECTION);
            }
        }
    }

    /// `Ev::DirectDone`: the query is over and the connection closed.
    pub(super) fn direct_done(&mut self, req: usize, backend: u64) {
        if self.dbs[0].health(backend) == Health::Alive {
            self.m.completed += 1;
        } else {
            self.m.query_errors += 1;
        }
        self.dbs[0].disconnect(backend);
        self.finish_request(req);
    }
}
