//! Maps keyed by the pool's ids: the core's connection table, the shell's leak origins.
//!
//! The ids are counters the core hands out, never input an attacker picks, so std's
//! SipHash (DoS resistance, ~20 ns a lookup) buys nothing here; a multiplicative hash of
//! the counter (FxHash's step) spreads sequential ids just as well. A B-tree cost a node
//! shift on every insert and remove on the hot path. Iteration order is not id order:
//! code that acts on several entries sorts them first, so actions come out in id order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::IdHasher;

    #[test]
    fn sequential_ids_spread_over_the_buckets() {
        // The top bits pick hashbrown's control group; sequential counters must not
        // collide there or every lookup degrades to a scan.
        let build = BuildHasherDefault::<IdHasher>::default();
        let tops: std::collections::BTreeSet<u64> =
            (0..1024u64).map(|i| build.hash_one(i) >> 54).collect();
        assert!(tops.len() > 600, "only {} distinct top bits", tops.len());
    }
}
