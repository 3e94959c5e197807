//! [`time_alloc_free_pairs`]: host-side latency of alloc+free hit pairs (design
//! `hyperbolic.md` §10 target: median < 1 µs, p99 < 2 µs). Tests never assert on it.
//!
//! Method: after a warm-up that leaves a free block in the class (so every timed pair is a
//! hit), pairs are timed in batches of [`BATCH`] with one `Instant` read per batch, and each
//! batch's time / [`BATCH`] is one sample: median and p99 are over those samples, free of the
//! ~20–40 ns cost of reading the clock. A batch average smooths single slow pairs, so the
//! batched p99 understates the per-pair tail; `single_*` fields time each pair on its own
//! (clock cost included, given apart as `instant_overhead_ns`), an upper bound on the tail.

use std::hint::black_box;
use std::time::Instant;

use crate::error::{PoolError, Result};
use crate::pool::Pool;
use crate::source::SlabSource;

/// Pairs per timed batch.
pub const BATCH: usize = 64;

/// The most pairs one call times.
pub const MAX_PAIRS: usize = 100_000_000;

/// Warm-up pairs before timing.
pub const WARMUP_PAIRS: usize = 10_000;

/// Latency of alloc+free pairs, in nanoseconds per pair.
///
/// ```
/// use muse_pool::{time_alloc_free_pairs, HostAddressSpace, Pool};
/// let pool = Pool::new(HostAddressSpace::new());
/// let t = time_alloc_free_pairs(&pool, 4096, 1000)?;
/// assert!(t.all_hits && t.median_ns > 0.0 && t.p99_ns >= t.median_ns);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairTiming {
    /// Bytes per allocation.
    pub bytes: usize,
    /// Pairs timed in batches (`pairs` rounded up to a whole number of batches).
    pub pairs: usize,
    /// Pairs per batch ([`BATCH`]).
    pub batch: usize,
    /// Median over batches of batch time / `batch`.
    pub median_ns: f64,
    /// 99th percentile (nearest rank) over batches of batch time / `batch`.
    pub p99_ns: f64,
    /// Mean over all batched pairs.
    pub mean_ns: f64,
    /// Median of pairs timed one by one (includes one clock read).
    pub single_median_ns: f64,
    /// 99th percentile of pairs timed one by one (includes one clock read).
    pub single_p99_ns: f64,
    /// Median cost of two back-to-back `Instant::now()` reads, for scale.
    pub instant_overhead_ns: f64,
    /// Whether every timed pair was a free-list hit (no slab grown, no block carved).
    pub all_hits: bool,
}

/// Times `pairs` alloc+free hit pairs of `bytes` bytes on `pool` (see the module docs).
///
/// Errors: `pairs` outside `1..=MAX_PAIRS` ([`PoolError::Invalid`]), or the first allocation's error.
pub fn time_alloc_free_pairs<S: SlabSource>(
    pool: &Pool<S>,
    bytes: usize,
    pairs: usize,
) -> Result<PairTiming> {
    if !(1..=MAX_PAIRS).contains(&pairs) {
        return Err(PoolError::Invalid {
            op: "time_alloc_free_pairs",
            name: "pairs",
            rule: "must be in 1..=100000000 (samples are kept in memory)",
            value: pairs as u64,
        });
    }
    for _ in 0..WARMUP_PAIRS {
        black_box(pool.alloc(bytes)?);
    }
    let before = pool.stats();

    let batches = pairs.div_ceil(BATCH);
    let mut per_pair = Vec::with_capacity(batches);
    for _ in 0..batches {
        let t0 = Instant::now();
        for _ in 0..BATCH {
            black_box(pool.alloc(black_box(bytes))?);
        }
        per_pair.push(t0.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let mean_ns = per_pair.iter().sum::<f64>() / batches as f64;

    let mut single = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let t0 = Instant::now();
        black_box(pool.alloc(black_box(bytes))?);
        single.push(t0.elapsed().as_nanos() as f64);
    }
    let mut clock = Vec::with_capacity(pairs.min(100_000));
    for _ in 0..pairs.min(100_000) {
        let t0 = Instant::now();
        clock.push(black_box(Instant::now()).duration_since(t0).as_nanos() as f64);
    }

    let after = pool.stats();
    let (median_ns, p99_ns) = median_p99(&mut per_pair);
    let (single_median_ns, single_p99_ns) = median_p99(&mut single);
    Ok(PairTiming {
        bytes,
        pairs: batches * BATCH,
        batch: BATCH,
        median_ns,
        p99_ns,
        mean_ns,
        single_median_ns,
        single_p99_ns,
        instant_overhead_ns: median_p99(&mut clock).0,
        all_hits: after.misses == before.misses && after.slab_allocs == before.slab_allocs,
    })
}

/// Median and nearest-rank 99th percentile of non-empty `xs` (sorted in place).
fn median_p99(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    let rank = (0.99 * n as f64).ceil() as usize;
    (median, xs[rank.clamp(1, n) - 1])
}
