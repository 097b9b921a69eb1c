//! Cost against queue length: one connection, N futures queued behind it; each cycle
//! releases the connection (it goes to the front waiter), completes that waiter, and
//! queues a new one at the back, so the queue stays at N. Single thread, no-op wakers:
//! the figure is the pool's own work, not scheduling.
//!
//! Memory: heap bytes allocated while N waiters queue, less the futures themselves (the
//! caller owns those), divided by N, from the counting global allocator.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use stats_alloc::Region;

use crate::contenders::{Bb8, Contender, Deadpool, Floor, Kind, Ours};
use crate::stats::ratio;
use crate::Opts;

const SIZES: [usize; 3] = [10, 1_000, 100_000];

struct Result {
    /// Nanoseconds per cycle (release + grant + completed acquire + new queued acquire).
    ns_per_cycle: f64,
    /// Heap bytes per queued waiter outside the waiting future.
    bytes_per_waiter: f64,
    /// Size of the waiting future (caller-owned; here boxed).
    future_bytes: usize,
}

type Waiting<'a, G> = Pin<Box<dyn Future<Output = G> + Send + 'a>>;

fn poll_once<G>(fut: &mut Waiting<'_, G>) -> Poll<G> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    fut.as_mut().poll(&mut cx)
}

/// Runs outside `block_on` (inside the runtime's context only), so tokio's cooperative
/// budget does not turn the semaphore-based contenders' polls into spurious `Pending`s.
fn measure<C: Contender>(
    rt: &tokio::runtime::Runtime,
    pool: C,
    queued: usize,
    measure: Duration,
) -> Result {
    let mut lease = Some(rt.block_on(pool.get()));
    let _context = rt.enter();
    let mut queue: VecDeque<Waiting<'_, C::Guard>> = VecDeque::with_capacity(queued + 1);
    let mut future_bytes = 0;

    let region = Region::new(crate::allocator());
    for _ in 0..queued {
        let mut fut: Waiting<'_, C::Guard> = Box::pin(pool.get());
        future_bytes = std::mem::size_of_val(&*fut);
        assert!(poll_once(&mut fut).is_pending(), "the waiter must queue");
        queue.push_back(fut);
    }
    let change = region.change();
    // `stats_alloc` already counts a realloc's growth in `bytes_allocated` (and its
    // shrinkage in `bytes_deallocated`); `bytes_reallocated` is the same bytes again.
    let net = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
    let bytes_per_waiter = net / queued as f64 - future_bytes as f64;

    // Warm up, then time batches until `measure` has passed.
    for _ in 0..1_000 {
        cycle(&pool, &mut lease, &mut queue);
    }
    let start = Instant::now();
    let mut cycles = 0u64;
    while start.elapsed() < measure {
        for _ in 0..1_000 {
            cycle(&pool, &mut lease, &mut queue);
        }
        cycles += 1_000;
    }
    let ns_per_cycle = start.elapsed().as_nanos() as f64 / cycles as f64;
    drop(queue);
    drop(lease);
    Result {
        ns_per_cycle,
        bytes_per_waiter,
        future_bytes,
    }
}

/// Release the connection to the front waiter, complete it, queue a new waiter.
fn cycle<'a, C: Contender>(
    pool: &'a C,
    lease: &mut Option<C::Guard>,
    queue: &mut VecDeque<Waiting<'a, C::Guard>>,
) {
    drop(lease.take());
    let mut front = queue.pop_front().expect("a queued waiter");
    match poll_once(&mut front) {
        Poll::Ready(guard) => *lease = Some(guard),
        Poll::Pending => panic!("the front waiter must have been granted"),
    }
    let mut fut: Waiting<'a, C::Guard> = Box::pin(pool.get());
    assert!(poll_once(&mut fut).is_pending(), "the waiter must queue");
    queue.push_back(fut);
}

fn one(kind: Kind, queued: usize, opts: Opts) -> Result {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let d = opts.duration().min(Duration::from_secs(1));
    let _context = rt.enter();
    match kind {
        Kind::Ours => measure(&rt, Ours::new(1, 2 * SIZES[2]), queued, d),
        Kind::Deadpool => measure(&rt, Deadpool::new(1), queued, d),
        Kind::Bb8 => measure(&rt, rt.block_on(Bb8::new(1)), queued, d),
        Kind::Floor => measure(&rt, Floor::new(1), queued, d),
    }
}

pub(crate) fn run(opts: Opts) {
    println!("## Cost against queue length (1 connection, N queued waiters, 1 thread)\n");
    println!("| contender | queued | ns per release + acquire | vs 10 queued | heap bytes per queued waiter (besides the future) | future size (bytes) |");
    println!("|---|---|---|---|---|---|");
    for kind in Kind::selected(opts.only) {
        let mut base = None;
        for queued in SIZES {
            // Median of the rounds by time; memory is deterministic.
            let mut rs: Vec<Result> = (0..opts.rounds).map(|_| one(kind, queued, opts)).collect();
            rs.sort_by(|a, b| a.ns_per_cycle.partial_cmp(&b.ns_per_cycle).expect("no NaN"));
            let r = rs.swap_remove(rs.len() / 2);
            let b = *base.get_or_insert(r.ns_per_cycle);
            println!(
                "| {} | {queued} | {:.0} | {} | {:.1} | {} |",
                kind.name(),
                r.ns_per_cycle,
                ratio(r.ns_per_cycle, b),
                r.bytes_per_waiter,
                r.future_bytes
            );
        }
    }
    println!();
}
