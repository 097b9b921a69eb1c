//! The timeline for the plot: after every event, the database's open connections and the
//! live pools' counts, kept per bucket of virtual time.

use super::Sim;

/// The plotted series over virtual time, in fixed buckets: per bucket the maximum of each
/// series (so short spikes show) and its last value (carried through quiet buckets).
#[derive(Clone, Debug)]
pub struct Timeline {
    pub end: u64,
    /// (open at db, leased, idle, waiters, opening) maxima; `None` where nothing happened.
    pub buckets: Vec<Option<[usize; 5]>>,
    /// The last values recorded in each bucket.
    pub last: Vec<Option<[usize; 5]>>,
}

pub const TIMELINE_BUCKETS: usize = 800;

impl Timeline {
    pub fn new(end: u64) -> Self {
        Timeline {
            end: end.max(1),
            buckets: vec![None; TIMELINE_BUCKETS],
            last: vec![None; TIMELINE_BUCKETS],
        }
    }

    pub fn record(
        &mut self,
        t: u64,
        open: usize,
        leased: usize,
        idle: usize,
        waiters: usize,
        opening: usize,
    ) {
        let i = ((u128::from(t) * TIMELINE_BUCKETS as u128 / u128::from(self.end)) as usize)
            .min(TIMELINE_BUCKETS - 1);
        let v = [open, leased, idle, waiters, opening];
        let b = self.buckets[i].get_or_insert([0; 5]);
        for (a, x) in b.iter_mut().zip(v) {
            *a = (*a).max(x);
        }
        self.last[i] = Some(v);
    }

    /// Per bucket: the maxima where something happened, else the values carried forward.
    pub fn filled(&self) -> Vec<[usize; 5]> {
        let mut carry = [0; 5];
        self.buckets
            .iter()
            .zip(&self.last)
            .map(|(b, l)| match (b, l) {
                (Some(max), Some(last)) => {
                    carry = *last;
                    *max
                }
                _ => carry,
            })
            .collect()
    }
}

impl Sim {
    pub(super) fn sample(&mut self) {
        let s = self.live_status();
        let open = self.dbs[0].open_count();
        if let Some(tl) = &mut self.timeline {
            tl.record(self.now, open, s.leased, s.idle, s.waiters, s.opening);
        }
    }
}
