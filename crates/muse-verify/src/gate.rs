//! The regression gate: compares a fresh report with a committed baseline.
//!
//! Correctness: every record of the fresh report must pass, and every record the baseline has
//! for a backend that the fresh run covered must still be there (a silently dropped case is a
//! regression). Speed (optional): a KPI (a time record that carries a target) may not exceed the
//! baseline by more than a given fraction, compared only where the record key and device match.
//! Provenance (optional): a GPU report must have measured the kernel sources now in the tree.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Record, Report};

/// Outcome of a gate check.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GateOutcome {
    /// Reasons the gate fails, one line each.
    pub regressions: Vec<String>,
    /// Record keys present now but not in the baseline (informational).
    pub new: Vec<String>,
    /// Comparisons that were skipped, with why (informational).
    pub not_comparable: Vec<String>,
}

impl GateOutcome {
    /// True when nothing regressed.
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }
}

/// Units treated as times for the speed gate.
const TIME_UNITS: [&str; 3] = ["s", "ms", "us"];

/// Checks `current` against `baseline`. `max_slowdown` (e.g. 0.10) turns on the speed gate.
///
/// ```
/// use muse_verify::{gate::check, report::Site, Report, Target};
/// let site = Site { kernel: "k", backend: "cpu", case: "c", shape: &[1], dtype: "f64" };
/// let mut base = Report::new("cpu");
/// base.records.push(site.record("err", 0.0, "", Some(Target::AtMost(1.0))));
/// let mut now = base.clone();
/// assert!(check(&base, &now, None).passed());
/// now.records[0] = site.record("err", 2.0, "", Some(Target::AtMost(1.0)));
/// assert!(!check(&base, &now, None).passed());
/// ```
pub fn check(baseline: &Report, current: &Report, max_slowdown: Option<f64>) -> GateOutcome {
    let mut out = GateOutcome::default();
    let base: BTreeMap<String, &Record> = baseline.records.iter().map(|r| (r.key(), r)).collect();
    let now: BTreeMap<String, &Record> = current.records.iter().map(|r| (r.key(), r)).collect();
    let backends: BTreeSet<&str> = current.records.iter().map(|r| r.backend.as_str()).collect();

    for r in current.failures() {
        out.regressions.push(format!(
            "{} = {} {} fails its target {}",
            r.key(),
            r.value,
            r.unit,
            r.target.map_or_else(String::new, |t| t.to_string())
        ));
    }
    for (key, b) in &base {
        match now.get(key) {
            None if backends.contains(b.backend.as_str()) => {
                out.regressions
                    .push(format!("{key}: in the baseline but missing now"));
            }
            None => out
                .not_comparable
                .push(format!("{key}: backend `{}` did not run", b.backend)),
            Some(n) => {
                let kpi = (b.target.is_some() || b.goal.is_some())
                    && TIME_UNITS.contains(&b.unit.as_str());
                if let Some(limit) = max_slowdown.filter(|_| kpi) {
                    if baseline.device != current.device {
                        out.not_comparable.push(format!(
                            "{key}: device `{}` vs baseline `{}`",
                            current.device, baseline.device
                        ));
                    } else if n.unit == b.unit && n.value > b.value * (1.0 + limit) {
                        out.regressions.push(format!(
                            "{key}: {} {} is {:.1}% slower than the baseline {} {} (limit {:.0}%)",
                            n.value,
                            n.unit,
                            (n.value / b.value - 1.0) * 100.0,
                            b.value,
                            b.unit,
                            limit * 100.0
                        ));
                    }
                }
            }
        }
    }
    out.new = now
        .keys()
        .filter(|k| !base.contains_key(*k))
        .cloned()
        .collect();
    out
}

/// Drops from `baseline` the records whose metric is one of `metrics`, or whose key
/// (`kernel/backend/case/…`) starts with one: measurements retired on purpose (a schedule removed
/// from the code, a case renamed), named on the command line so that the retirement is visible
/// where the gate runs. Returns one `not comparable` line per record.
///
/// ```
/// use muse_verify::{gate, report::Site, Report};
/// let site = Site { kernel: "k", backend: "cuda", case: "c", shape: &[1], dtype: "bf16" };
/// let mut base = Report::new("kpi-cuda");
/// base.records.push(site.record("time_median", 1.0, "us", None));
/// base.records.push(site.record("time_median_schedule_old", 1.0, "us", None));
/// let lines = gate::retire_metrics(&mut base, &["time_median_schedule_old".to_string()]);
/// assert_eq!((base.records.len(), lines.len()), (1, 1));
/// ```
pub fn retire_metrics(baseline: &mut Report, metrics: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    baseline.records.retain(|r| {
        let key = r.key();
        let keep = !metrics
            .iter()
            .any(|m| *m == r.metric || key.starts_with(m.as_str()));
        if !keep {
            lines.push(format!("{key}: retired on purpose"));
        }
        keep
    });
    lines
}

/// Drops from `baseline` the compiler records (kernel `ptxas`, case = the CUDA function) of
/// functions that no longer appear in `sources` (the kernel files' text): a removed or renamed
/// kernel has no register count left to compare. Returns one `not comparable` line per record.
///
/// ```
/// use muse_verify::{gate, report::Site, Report};
/// let mut base = Report::new("kpi-cuda");
/// for case in ["kept_kernel", "gone_kernel"] {
///     let site = Site { kernel: "ptxas", backend: "cuda", case, shape: &[], dtype: "model" };
///     base.records.push(site.record("registers", 40.0, "", None));
/// }
/// let lines = gate::retire_removed_kernels(&mut base, "__global__ void kept_kernel(float* x) {}");
/// assert_eq!(base.records.len(), 1);
/// assert_eq!(lines.len(), 1);
/// ```
pub fn retire_removed_kernels(baseline: &mut Report, sources: &str) -> Vec<String> {
    let defined = |name: &str| {
        sources.match_indices(&format!("{name}(")).any(|(i, _)| {
            sources[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
    };
    let mut lines = Vec::new();
    baseline.records.retain(|r| {
        let keep = r.kernel != "ptxas" || defined(&r.case);
        if !keep {
            lines.push(format!(
                "{}: CUDA function `{}` is no longer in the kernel sources",
                r.key(),
                r.case
            ));
        }
        keep
    });
    lines
}

/// The report's `meta.kernel_sources_sha256` against the hash of the sources in the tree: a
/// regression line when the report is missing the hash or measured other sources.
pub fn check_sources(report: &Report, sources_now: &str) -> Option<String> {
    match report.meta.get("kernel_sources_sha256").and_then(|v| v.as_str()) {
        Some(h) if h == sources_now => None,
        Some(h) => Some(format!(
            "kernel sources changed after this GPU report was made (report measured {h}, the tree has {sources_now}): rerun bash ci/gpu-run.sh on the GPU machine and commit its reports"
        )),
        None => Some("the report records no kernel_sources_sha256, so what it measured is unknown".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Target;

    fn rec(backend: &str, case: &str, value: f64, unit: &str, target: Option<Target>) -> Record {
        crate::report::Site {
            kernel: "k",
            backend,
            case,
            shape: &[1, 8],
            dtype: "f32",
        }
        .record("m", value, unit, target)
    }

    fn report(device: &str, records: Vec<Record>) -> Report {
        Report {
            records,
            device: device.into(),
            ..Report::new(device)
        }
    }

    #[test]
    fn dropped_case_of_a_backend_that_ran_is_a_regression() {
        let base = report(
            "d",
            vec![
                rec("cpu", "a", 0.0, "", None),
                rec("cpu", "b", 0.0, "", None),
            ],
        );
        let now = report("d", vec![rec("cpu", "a", 0.0, "", None)]);
        let out = check(&base, &now, None);
        assert_eq!(out.regressions.len(), 1, "{out:?}");
        assert!(out.regressions[0].contains("missing now"));
    }

    #[test]
    fn backend_that_did_not_run_is_not_comparable() {
        let base = report(
            "d",
            vec![
                rec("cpu", "a", 0.0, "", None),
                rec("cuda", "a", 0.0, "", None),
            ],
        );
        let now = report("d", vec![rec("cpu", "a", 0.0, "", None)]);
        let out = check(&base, &now, None);
        assert!(out.passed(), "{out:?}");
        assert_eq!(out.not_comparable.len(), 1);
    }

    #[test]
    fn kpi_slowdown_beyond_the_limit_fails_only_on_the_same_device() {
        let kpi = Some(Target::AtMost(20.0));
        let base = report("h100", vec![rec("cuda", "a", 10.0, "us", kpi)]);
        let slower = report("h100", vec![rec("cuda", "a", 11.5, "us", kpi)]);
        let within = report("h100", vec![rec("cuda", "a", 10.9, "us", kpi)]);
        assert!(!check(&base, &slower, Some(0.1)).passed());
        assert!(check(&base, &within, Some(0.1)).passed());
        assert!(check(&base, &slower, None).passed(), "speed gate off");
        let other = report("h200", vec![rec("cuda", "a", 19.0, "us", kpi)]);
        assert!(check(&base, &other, Some(0.1)).passed());
        // Timings without a target (p20, baselines of other libraries) are not KPIs.
        let base = report("h100", vec![rec("torch", "a", 10.0, "us", None)]);
        let slower = report("h100", vec![rec("torch", "a", 30.0, "us", None)]);
        assert!(check(&base, &slower, Some(0.1)).passed());
    }

    #[test]
    fn report_of_other_kernel_sources_is_refused() {
        let mut r = report("h100", vec![]);
        assert!(check_sources(&r, "abc").is_some(), "no hash recorded");
        r.meta.insert("kernel_sources_sha256".into(), "abc".into());
        assert!(check_sources(&r, "abc").is_none());
        assert!(check_sources(&r, "abd")
            .unwrap()
            .contains("kernel sources changed"));
    }

    #[test]
    fn failing_record_fails_the_gate_and_new_records_are_listed() {
        let base = report("d", vec![]);
        let now = report(
            "d",
            vec![rec("cpu", "a", 2.0, "", Some(Target::AtMost(1.0)))],
        );
        let out = check(&base, &now, None);
        assert!(!out.passed());
        assert_eq!(out.new.len(), 1);
    }
}
