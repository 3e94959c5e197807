//! Timing for the KPIs. CPU: wall clock, warm-up, then repeats within a time budget, summarised
//! by median and percentiles ([`time`]). GPU: CUDA events with the L2 flushed before every repeat,
//! which stay at the launch boundary in `muse_cuda::timing` and are re-exported here with the
//! `cuda` feature.

use std::time::{Duration, Instant};

#[cfg(feature = "cuda")]
pub use muse_cuda::timing::{time_events, EventTiming};

/// Summary of repeated timings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Median.
    pub median_ms: f64,
    /// 20th percentile.
    pub p20_ms: f64,
    /// 80th percentile.
    pub p80_ms: f64,
    /// Number of timed runs.
    pub runs: usize,
}

/// Times `f`: 3 warm-up calls, then repeats for about `budget` (at least 10, at most 1000).
///
/// ```
/// let t = muse_bench::timing::time(std::time::Duration::from_millis(1), || (0..100).sum::<u64>());
/// assert!(t.runs >= 10 && t.p20_ms <= t.median_ms && t.median_ms <= t.p80_ms);
/// ```
pub fn time<T>(budget: Duration, mut f: impl FnMut() -> T) -> Timing {
    for _ in 0..3 {
        std::hint::black_box(f());
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < 10 || (start.elapsed() < budget && samples.len() < 1000) {
        let t = Instant::now();
        std::hint::black_box(f());
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    summarise(samples)
}

/// Median and percentiles of samples in milliseconds (nearest rank).
///
/// # Panics
///
/// On an empty `samples`.
pub fn summarise(mut samples: Vec<f64>) -> Timing {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Timing {
        median_ms: at(0.5),
        p20_ms: at(0.2),
        p80_ms: at(0.8),
        runs: samples.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarise_takes_nearest_ranks() {
        let t = summarise((1..=11).rev().map(f64::from).collect());
        assert_eq!(
            (t.p20_ms, t.median_ms, t.p80_ms, t.runs),
            (3.0, 6.0, 9.0, 11)
        );
    }
}
