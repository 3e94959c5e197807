//! Reports: one JSON document per run (`{commit, device, created, records}`), rendered to
//! Markdown. Reports are generated, never hand-written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// One measured quantity of one kernel on one backend for one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Kernel family and op, e.g. `bk_core_forward`.
    pub kernel: String,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// Case name (fixture name, shape id or property name).
    pub case: String,
    /// Shape of the main input, e.g. `[16, 4096]` for (B, N).
    pub shape: Vec<usize>,
    /// Precision the kernel ran in: `f32` or `f64`.
    pub dtype: String,
    /// What was measured, e.g. `max_rel_err`, `mse`, `time_median`.
    pub metric: String,
    /// The measured value (`null` in JSON when not finite).
    #[serde(serialize_with = "ser_value", deserialize_with = "de_value")]
    pub value: f64,
    /// Unit of `value`: `""` for ratios and errors, `ms`, `us`, `bytes`, …
    pub unit: String,
    /// The bound `value` must meet, if any.
    pub target: Option<Target>,
    /// Whether `value` meets `target` (true when there is no target).
    pub pass: bool,
    /// An issue's goal that is reported, not gated: shown as met or missed in the report (the
    /// reason for a miss goes in the report's meta); the speed gate still compares its times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Target>,
    /// The original's benchmark file this record answers (e.g.
    /// `phase8_quantization_benchmark.json`), in the per-file sections of a `muse bench` report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// Where a measurement was taken: kernel, backend, case, shape and dtype. Records are made
/// from a site, so the five identifying fields are written once per comparison.
///
/// ```
/// use muse_verify::{report::Site, Target};
/// let site = Site { kernel: "bk_core_forward", backend: "cpu", case: "hopping", shape: &[2, 256], dtype: "f32" };
/// let r = site.record("mse", 1e-9, "", Some(Target::Below(1e-6)));
/// assert!(r.pass && r.case == "hopping");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// Kernel family and op.
    pub kernel: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Case id.
    pub case: &'a str,
    /// Shape of the main input.
    pub shape: &'a [usize],
    /// Precision the kernel ran in.
    pub dtype: &'a str,
}

impl Site<'_> {
    /// A record of `metric` at this site; `pass` is computed from `target`.
    pub fn record(&self, metric: &str, value: f64, unit: &str, target: Option<Target>) -> Record {
        Record {
            kernel: self.kernel.into(),
            backend: self.backend.into(),
            case: self.case.into(),
            shape: self.shape.to_vec(),
            dtype: self.dtype.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            target,
            pass: target.is_none_or(|t| t.holds(value)),
            goal: None,
            original: None,
        }
    }

    /// A record of `metric` measured against a goal (reported, not gated).
    ///
    /// ```
    /// use muse_verify::{report::Site, Target};
    /// let site = Site { kernel: "k", backend: "cuda", case: "c", shape: &[1], dtype: "bf16" };
    /// let r = site.goal("time_over_sdpa", 2.2, "x", Target::AtMost(2.0));
    /// assert!(r.pass && r.goal_met() == Some(false));
    /// ```
    pub fn goal(&self, metric: &str, value: f64, unit: &str, goal: Target) -> Record {
        Record {
            goal: Some(goal),
            ..self.record(metric, value, unit, None)
        }
    }
}

impl Record {
    /// Whether the value meets its goal (`None` without one).
    pub fn goal_met(&self) -> Option<bool> {
        self.goal.map(|g| g.holds(self.value))
    }

    /// The identity of a record across runs: kernel, backend, case, shape, dtype, metric.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{:?}/{}/{}",
            self.kernel, self.backend, self.case, self.shape, self.dtype, self.metric
        )
    }
}

fn ser_value<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn de_value<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A bound on a value: `<= x`, `< x` or `>= x`. Serialised as that string.
///
/// ```
/// use muse_verify::Target;
/// let t: Target = "<= 5".parse().unwrap();
/// assert!(t.holds(5.0) && !t.holds(5.1) && !t.holds(f64::NAN));
/// assert_eq!(t.to_string(), "<= 5");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Target {
    /// value ≤ x.
    AtMost(f64),
    /// value < x.
    Below(f64),
    /// value ≥ x.
    AtLeast(f64),
}

impl Target {
    /// Whether `value` meets the bound (never for NaN).
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Target::AtMost(x) => value <= x,
            Target::Below(x) => value < x,
            Target::AtLeast(x) => value >= x,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(x) => write!(f, "<= {x}"),
            Target::Below(x) => write!(f, "< {x}"),
            Target::AtLeast(x) => write!(f, ">= {x}"),
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (op, x) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("target `{s}`: expected `<op> <number>`"))?;
        let x: f64 = x.trim().parse().map_err(|e| format!("target `{s}`: {e}"))?;
        match op {
            "<=" => Ok(Target::AtMost(x)),
            "<" => Ok(Target::Below(x)),
            ">=" => Ok(Target::AtLeast(x)),
            _ => Err(format!("target `{s}`: operator must be <=, < or >=")),
        }
    }
}

/// A report: provenance plus records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Git commit the code was built from (`<sha>` or `<sha>-dirty`).
    pub commit: String,
    /// Device description (CPU model, or GPU name and driver).
    pub device: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Extra provenance (driver, nvcc, kernel source hash, skipped backends, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
    /// The measurements.
    pub records: Vec<Record>,
}

impl Report {
    /// An empty report stamped with the current commit and time.
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            commit: git_commit(),
            device: device.into(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            meta: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    /// Records that fail their target.
    pub fn failures(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| !r.pass)
    }

    /// Reads a report from JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })
    }

    /// Writes `<dir>/<stem>.json` and `<dir>/<stem>.md`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str, title: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.into(),
            source,
        })?;
        let json = dir.join(format!("{stem}.json"));
        let md = dir.join(format!("{stem}.md"));
        let text = serde_json::to_string_pretty(self).expect("invariant: reports serialise");
        write_file(&json, &(text + "\n"))?;
        write_file(&md, &self.to_markdown(title))?;
        Ok((json, md))
    }

    /// Renders the report as Markdown: provenance, a summary, one table per kernel.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut s = format!("# {title}\n\n");
        let _ = writeln!(s, "- commit: `{}`", self.commit);
        let _ = writeln!(s, "- device: {}", self.device);
        let _ = writeln!(s, "- created: {}", self.created);
        for (k, v) in &self.meta {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let _ = writeln!(s, "- {k}: {v}");
        }
        if let Some(plot) = self.meta.get("plot").and_then(|p| p.as_str()) {
            let _ = writeln!(s, "\n![time against N]({plot})");
        }
        let failed = self.failures().count();
        let _ = writeln!(
            s,
            "\n**{} records, {} passed, {} failed.**\n",
            self.records.len(),
            self.records.len() - failed,
            failed
        );
        let kpis = self
            .records
            .iter()
            .filter(|r| r.target.is_some() && ["s", "ms", "us"].contains(&r.unit.as_str()))
            .map(|r| (r, r.target, if r.pass { "PASS" } else { "**FAIL**" }));
        push_summary(&mut s, "KPIs", ["target", "pass"], kpis);
        let goals = self.records.iter().filter(|r| r.goal.is_some()).map(|r| {
            let met = if r.goal_met() == Some(true) {
                "met"
            } else {
                "**missed**"
            };
            (r, r.goal, met)
        });
        push_summary(
            &mut s,
            "Goals (reported, not gated; reasons for misses in the meta above)",
            ["goal", "met"],
            goals,
        );
        let mut kernels: Vec<&str> = self.records.iter().map(|r| r.kernel.as_str()).collect();
        kernels.dedup();
        kernels.sort_unstable();
        kernels.dedup();
        for kernel in kernels {
            let _ = writeln!(s, "## {kernel}\n");
            s.push_str(
                "| backend | case | shape | dtype | metric | value | unit | target | pass |\n",
            );
            s.push_str("|---|---|---|---|---|---|---|---|---|\n");
            for r in self.records.iter().filter(|r| r.kernel == kernel) {
                let shape: Vec<String> = r.shape.iter().map(usize::to_string).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.backend,
                    r.case,
                    shape.join("×"),
                    r.dtype,
                    r.metric,
                    fmt_value(r.value),
                    r.unit,
                    match (r.target, r.goal) {
                        (Some(t), _) => t.to_string(),
                        (None, Some(g)) => format!("goal {g}"),
                        (None, None) => "—".into(),
                    },
                    match r.goal_met() {
                        Some(false) => "missed",
                        _ if r.pass => "PASS",
                        _ => "**FAIL**",
                    }
                );
            }
            s.push('\n');
        }
        s
    }
}

/// A summary table (the KPIs, the goals) under `heading`, nothing when `rows` is empty: one row
/// per record with its bound and verdict, headed `cols`, as the last two columns.
fn push_summary<'a>(
    s: &mut String,
    heading: &str,
    cols: [&str; 2],
    rows: impl Iterator<Item = (&'a Record, Option<Target>, &'static str)>,
) {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return;
    }
    let _ = writeln!(
        s,
        "## {heading}\n\n| kernel | backend | case | dtype | metric | value | unit | {} | {} |",
        cols[0], cols[1]
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (r, bound, verdict) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.kernel,
            r.backend,
            r.case,
            r.dtype,
            r.metric,
            fmt_value(r.value),
            r.unit,
            bound.map_or_else(String::new, |t| t.to_string()),
            verdict
        );
    }
    s.push('\n');
}
/// Formats a value compactly: plain for moderate magnitudes, scientific otherwise.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e5).contains(&a) {
        format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// Writes a text file, naming it in the error.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })
}

/// The commit of the working tree: `$MUSE_GIT_COMMIT` if set (the GPU machine has no `.git`),
/// else `git rev-parse --short=12 HEAD` with `-dirty` when tracked files outside `reports/`
/// changed, else `unknown`.
pub fn git_commit() -> String {
    if let Ok(c) = std::env::var("MUSE_GIT_COMMIT") {
        return c;
    }
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        // Generated reports are outputs, not code: rewriting them does not make the code dirty.
        Some(sha) => match run(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!reports",
        ]) {
            Some(s) if !s.is_empty() => format!("{sha}-dirty"),
            _ => sha,
        },
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Site<'static> = Site {
        kernel: "k",
        backend: "cpu",
        case: "c",
        shape: &[2, 3],
        dtype: "f64",
    };

    #[test]
    fn json_round_trips_non_finite_values_and_targets() {
        let mut r = Report::new("cpu");
        r.records
            .push(SITE.record("err", f64::NAN, "", Some(Target::Below(1e-6))));
        r.records.push(SITE.record("time", 1.5, "ms", None));
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains("\"value\":null") && text.contains("\"target\":\"< 0.000001\""),
            "{text}"
        );
        let back: Report = serde_json::from_str(&text).unwrap();
        assert!(back.records[0].value.is_nan() && !back.records[0].pass);
        assert_eq!(back.records[1], r.records[1]);
    }

    #[test]
    fn markdown_summarises_timed_targets_and_goals() {
        let mut r = Report::new("cpu");
        assert!(!r.to_markdown("t").contains("## KPIs"));
        r.records
            .push(SITE.record("time", 3.0, "ms", Some(Target::AtMost(2.0))));
        r.records
            .push(SITE.goal("ratio", 1.5, "x", Target::AtMost(1.0)));
        let md = r.to_markdown("t");
        assert!(md.contains(
            "## KPIs\n\n| kernel | backend | case | dtype | metric | value | unit | target | pass |\n|---|---|---|---|---|---|---|---|---|\n| k | cpu | c | f64 | time | 3 | ms | <= 2 | **FAIL** |\n\n"
        ), "{md}");
        assert!(md.contains(
            "## Goals (reported, not gated; reasons for misses in the meta above)\n\n| kernel | backend | case | dtype | metric | value | unit | goal | met |\n|---|---|---|---|---|---|---|---|---|\n| k | cpu | c | f64 | ratio | 1.5 | x | <= 1 | **missed** |\n\n"
        ), "{md}");
    }

    #[test]
    fn markdown_lists_every_record_and_marks_failures() {
        let mut r = Report::new("cpu");
        r.records.push(
            Site {
                kernel: "k1",
                ..SITE
            }
            .record("mse", 2.0, "", Some(Target::Below(1.0))),
        );
        r.records.push(
            Site {
                kernel: "k2",
                ..SITE
            }
            .record("mse", 0.5, "", Some(Target::Below(1.0))),
        );
        let md = r.to_markdown("t");
        assert!(md.contains("## k1") && md.contains("## k2") && md.contains("**FAIL**"));
        assert!(md.contains("2 records, 1 passed, 1 failed"));
    }

    #[test]
    fn malformed_targets_are_rejected() {
        for bad in ["5", "== 5", "<= x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
