//! Record helpers shared by the families: timing records from a CPU [`Timing`] or a GPU
//! `EventTiming`, throughput and speedup records, and the scaling-exponent fit. Cross-family
//! inputs have their own modules: [`sanitizer`] (compute-sanitizer logs), [`torch`] (PyTorch
//! baselines) and, with `cuda`, `ptxas` (the compiler's register and spill counts).

#[cfg(feature = "cuda")]
pub mod ptxas;
pub mod sanitizer;
pub mod torch;

use muse_verify::report::Site;
use muse_verify::{Record, Target};

use crate::timing::Timing;

/// The O(N) bound: a fitted exponent of time against N above this is not linear.
pub const MAX_LINEAR_EXPONENT: f64 = 1.15;

/// `time_median` (carrying `target`), `time_p20`, `time_p80` in ms and `runs` of a CPU timing.
///
/// ```
/// use muse_bench::{records::cpu_timing, timing::summarise};
/// use muse_verify::report::Site;
/// let site = Site { kernel: "bk_core_forward", backend: "cpu", case: "B1xN8", shape: &[1, 8], dtype: "f64" };
/// let recs = cpu_timing(&site, &summarise(vec![1.0, 2.0, 3.0]), None);
/// assert_eq!(recs[0].metric, "time_median");
/// assert_eq!((recs[0].value, recs[3].value), (2.0, 3.0));
/// ```
pub fn cpu_timing(site: &Site<'_>, t: &Timing, target: Option<Target>) -> Vec<Record> {
    vec![
        site.record("time_median", t.median_ms, "ms", target),
        site.record("time_p20", t.p20_ms, "ms", None),
        site.record("time_p80", t.p80_ms, "ms", None),
        site.record("runs", t.runs as f64, "", None),
    ]
}

/// `time_median` (carrying `target`), `time_p20`, `time_p80`, `time_min` in µs and `runs` of a
/// CUDA-event timing.
#[cfg(feature = "cuda")]
pub fn event_timing(
    site: &Site<'_>,
    t: &crate::timing::EventTiming,
    target: Option<Target>,
) -> Vec<Record> {
    vec![
        site.record("time_median", t.median_us, "us", target),
        site.record("time_p20", t.p20_us, "us", None),
        site.record("time_p80", t.p80_us, "us", None),
        site.record("time_min", t.min_us, "us", None),
        site.record("runs", t.runs as f64, "", None),
    ]
}

/// `throughput` in Melem/s: `elements` processed in `median_us` microseconds.
pub fn throughput(site: &Site<'_>, elements: f64, median_us: f64) -> Record {
    site.record("throughput", elements / median_us, "Melem/s", None)
}

/// A speedup record `metric` (`speedup_vs_…`, unit `x`): how many times `time` fits in
/// `baseline_time` (same unit).
pub fn speedup(site: &Site<'_>, metric: &str, baseline_time: f64, time: f64) -> Record {
    site.record(metric, baseline_time / time, "x", None)
}

/// The protocol's floor ([`muse_cuda::timing::launch_floor`]: one launch in which one thread
/// copies 16 cold bytes, timed as every kernel is) as records of kernel `launch_floor`, case
/// `timing_touch_16B`. A ratio whose two sides both sit near it cannot exceed baseline / floor.
#[cfg(feature = "cuda")]
pub fn launch_floor(
    gpu: &'static muse_cuda::Gpu,
    runs: usize,
    dtype: &'static str,
) -> Result<(crate::timing::EventTiming, Vec<Record>), muse_reference::Error> {
    let t = muse_cuda::timing::launch_floor(gpu, 5, runs)?;
    let site = Site {
        kernel: "launch_floor",
        backend: "cuda",
        case: "timing_touch_16B",
        shape: &[16],
        dtype,
    };
    Ok((t, event_timing(&site, &t, None)))
}

/// Least-squares slope of log(time) against log(N) over the points with N ≥ 1024 (smaller N is
/// dominated by fixed costs): 1.0 is O(N). NaN with fewer than two such points.
///
/// ```
/// let pts: Vec<(f64, f64)> = [1024.0, 4096.0, 16384.0].iter().map(|&n| (n, 3e-3 * n)).collect();
/// assert!((muse_bench::records::scaling_exponent(&pts) - 1.0).abs() < 1e-12);
/// ```
pub fn scaling_exponent(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= 1024.0)
        .map(|&(n, t)| (n.ln(), t.ln()))
        .collect();
    let k = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / k,
        pts.iter().map(|p| p.1).sum::<f64>() / k,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_exponent_ignores_small_n_and_fits_the_slope() {
        let mut pts = vec![(256.0, 50.0), (512.0, 50.0)];
        pts.extend([2048.0, 8192.0, 32768.0].map(|n: f64| (n, 1e-4 * n * n)));
        assert!((scaling_exponent(&pts) - 2.0).abs() < 1e-12);
        assert!(scaling_exponent(&pts[..3]).is_nan());
    }

    #[test]
    fn speedup_is_baseline_over_time() {
        let site = Site {
            kernel: "k",
            backend: "cuda",
            case: "c",
            shape: &[1],
            dtype: "f32",
        };
        let r = speedup(&site, "speedup_vs_x", 10.0, 4.0);
        assert_eq!((r.value, r.unit.as_str(), r.pass), (2.5, "x", true));
    }
}
