//! compute-sanitizer results as records: `ci/gpu-run.sh` runs `muse verify --backend cuda` under
//! memcheck and racecheck (then the model's CUDA tests, appended to the same log) and leaves
//! `memcheck.log` and `racecheck.log` in one directory; each tool's error count (summed over the
//! runs) must be 0, and the run under it must have checked at least one record.

use std::path::Path;

use muse_verify::report::Site;
use muse_verify::{Report, Target};

/// The sanitizer tools, in record order.
pub const TOOLS: [&str; 2] = ["memcheck", "racecheck"];

/// Adds `<tool>_errors` (target 0) and `<tool>_records_checked` (target ≥ 1) for each tool whose
/// log is in `dir`, at kernel `kernel`, case `compute-sanitizer`; the summary line goes to meta
/// `sanitizer_<tool>`, or `not run: … missing` when the log is absent.
pub fn records(report: &mut Report, dir: &Path, kernel: &str) {
    for tool in TOOLS {
        let path = dir.join(format!("{tool}.log"));
        let site = Site {
            kernel,
            backend: "cuda",
            case: "compute-sanitizer",
            shape: &[],
            dtype: "f32+f64",
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            report.meta.insert(
                format!("sanitizer_{tool}"),
                format!("not run: {} missing", path.display()).into(),
            );
            continue;
        };
        let value = total_errors(&text).map_or(f64::NAN, |e| e as f64);
        report.records.push(site.record(
            &format!("{tool}_errors"),
            value,
            "",
            Some(Target::AtMost(0.0)),
        ));
        report.records.push(site.record(
            &format!("{tool}_records_checked"),
            records_checked(&text).unwrap_or(0.0),
            "",
            Some(Target::AtLeast(1.0)),
        ));
        let summaries: Vec<&str> = text
            .lines()
            .filter(|l| parse_summary(l).is_some())
            .map(str::trim)
            .collect();
        let summary = if summaries.is_empty() {
            "no summary line".to_string()
        } else {
            summaries.join(" | ")
        };
        report
            .meta
            .insert(format!("sanitizer_{tool}"), summary.into());
    }
}

/// The error count of a summary line: `ERROR SUMMARY: 3 errors` (memcheck) or
/// `RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)`, with or without the
/// `========= ` prefix.
///
/// ```
/// use muse_bench::records::sanitizer::parse_summary;
/// assert_eq!(parse_summary("========= ERROR SUMMARY: 3 errors"), Some(3));
/// assert_eq!(parse_summary("RACECHECK SUMMARY: 0 hazards displayed (2 errors, 0 warnings)"), Some(2));
/// assert_eq!(parse_summary("302 records, 0 failed"), None);
/// ```
pub fn parse_summary(line: &str) -> Option<u64> {
    let line = line.trim().trim_start_matches("========= ");
    if let Some(rest) = line.strip_prefix("ERROR SUMMARY: ") {
        return rest.split_whitespace().next()?.parse().ok();
    }
    let rest = line.strip_prefix("RACECHECK SUMMARY: ")?;
    let inner = rest.split_once('(')?.1;
    inner.split_whitespace().next()?.parse().ok()
}

/// The errors of every sanitized run in the log (one summary line each: `ci/gpu-run.sh` appends
/// the model's CUDA tests to the `muse verify` run); `None` when the log has no summary line.
fn total_errors(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(parse_summary)
        .fold(None, |acc, e| Some(acc.unwrap_or(0) + e))
}

/// How many records the run under the tool checked: `muse verify` prints `N records, M failed`.
fn records_checked(log: &str) -> Option<f64> {
    log.lines().find_map(|l| {
        let (n, rest) = l.trim().split_once(" records, ")?;
        rest.ends_with(" failed").then(|| n.parse::<f64>().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_checked_reads_the_verify_summary() {
        let log = "cpu bk_core 3 0\n========= x\n302 records, 0 failed\n";
        assert_eq!(records_checked(log), Some(302.0));
        assert_eq!(records_checked("no summary"), None);
    }

    #[test]
    fn errors_of_every_run_in_the_log_are_added() {
        let log = "========= ERROR SUMMARY: 0 errors\n302 records, 0 failed\n========= ERROR SUMMARY: 2 errors\n";
        assert_eq!(total_errors(log), Some(2));
        assert_eq!(total_errors("302 records, 0 failed"), None);
    }

    #[test]
    fn a_missing_log_is_noted_not_recorded() {
        let mut report = Report::new("test");
        let dir = Path::new("/nonexistent/muse-bench-sanitizer");
        records(&mut report, dir, "bk_core_all_kernels");
        assert!(report.records.is_empty());
        assert!(report.meta["sanitizer_memcheck"]
            .as_str()
            .is_some_and(|s| s.starts_with("not run: ")));
    }
}
