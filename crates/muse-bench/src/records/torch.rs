//! PyTorch baselines measured on the same GPU in the same run (`ci/baselines/torch_*.py`), as
//! records beside the kernels' own.
//!
//! The file is `{"torch": <version>, "records": [{"impl", "kernel"?, "B", "H"?, "N", "D"?,
//! "dtype"?, "median_ms", "runs"?, "max_abs_err_vs_<oracle>"?, ...}]}`. A record without
//! `kernel` belongs to the loader's default kernel (`ci/baselines/torch_bk_core.py` predates the
//! field). The shape is the present dims of B, H, N, D in that order, the case `B16xN4096`.
//! Each family [`claim`](TorchBaseline::claim)s the rows of its kernels, records them and adds
//! its speedups (looking GPU times up by shape); rows no family claims are recorded at the end.

use std::path::Path;

use muse_verify::report::Site;
use muse_verify::Record;
use serde_json::Value;

use crate::{Error, Result};

/// Shape dims of a baseline record, in shape order; B and N are required.
const DIMS: [&str; 4] = ["B", "H", "N", "D"];

/// One baseline measurement: an implementation (`impl`) of a kernel at one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRow {
    /// The implementation, e.g. `mode_a_loop`; its records have backend `torch:<impl>`.
    pub imp: String,
    /// The kernel it computes, e.g. `bk_core_forward`.
    pub kernel: String,
    /// Shape id, e.g. `B16xN4096`.
    pub case: String,
    /// The shape, e.g. `[16, 4096]`.
    pub shape: Vec<usize>,
    /// PyTorch dtype, e.g. `complex128` (`?` when absent).
    pub dtype: String,
    /// Median time in milliseconds.
    pub median_ms: f64,
    /// Timed runs (NaN when absent).
    pub runs: f64,
    /// `max_abs_err_vs_<oracle>` fields, by name.
    pub errors: Vec<(String, f64)>,
}

impl BaselineRow {
    /// The backend of its records: `torch:<impl>`.
    pub fn backend(&self) -> String {
        format!("torch:{}", self.imp)
    }

    /// `time_median` (µs), `runs` and each `max_abs_err_vs_<oracle>`, at backend `torch:<impl>`.
    pub fn records(&self) -> Vec<Record> {
        let backend = self.backend();
        let site = Site {
            kernel: &self.kernel,
            backend: &backend,
            case: &self.case,
            shape: &self.shape,
            dtype: &self.dtype,
        };
        let mut out = vec![
            site.record("time_median", self.median_ms * 1e3, "us", None),
            site.record("runs", self.runs, "", None),
        ];
        for (metric, value) in &self.errors {
            out.push(site.record(metric, *value, "", None));
        }
        out
    }
}

/// A loaded baseline file: its rows, each claimed by at most one family.
///
/// ```
/// use muse_bench::records::torch::TorchBaseline;
/// let json = r#"{"torch": "2.9.0", "records": [
///     {"impl": "ratio_loop", "B": 16, "N": 4096, "dtype": "complex64", "median_ms": 80.0, "runs": 3}]}"#;
/// let mut tb = TorchBaseline::parse(json, "bk_core_forward")?;
/// assert_eq!(tb.median_ms("ratio_loop", "bk_core_forward", &[16, 4096]), Some(80.0));
/// let rows = tb.claim("bk_core_forward");
/// assert_eq!((rows[0].case.as_str(), rows[0].records().len()), ("B16xN4096", 2));
/// assert_eq!(tb.unclaimed().count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TorchBaseline {
    /// The file's `torch` field (the PyTorch version), for the report's meta.
    pub torch: Option<Value>,
    rows: Vec<(BaselineRow, bool)>,
}

impl TorchBaseline {
    /// Reads `path`; rows without `kernel` get `default_kernel`.
    pub fn load(path: &Path, default_kernel: &str) -> Result<Self> {
        let fail = |message: String| Error::Baseline {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&text, default_kernel).map_err(fail)
    }

    /// Parses the JSON text of a baseline file; the error names the malformed record.
    pub fn parse(text: &str, default_kernel: &str) -> std::result::Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let rows = json["records"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| row(r, default_kernel).map(|row| (row, false)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self {
            torch: json.get("torch").cloned(),
            rows,
        })
    }

    /// Median time (ms) of `imp` computing `kernel` at `shape`, if the file has it.
    pub fn median_ms(&self, imp: &str, kernel: &str, shape: &[usize]) -> Option<f64> {
        self.rows
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.imp == imp && r.kernel == kernel && r.shape == shape)
            .map(|r| r.median_ms)
    }

    /// The rows of `kernel`, in file order, marked as recorded by the caller.
    pub fn claim(&mut self, kernel: &str) -> Vec<BaselineRow> {
        self.rows
            .iter_mut()
            .filter(|(r, _)| r.kernel == kernel)
            .map(|(r, claimed)| {
                *claimed = true;
                r.clone()
            })
            .collect()
    }

    /// The rows no family claimed, in file order.
    pub fn unclaimed(&self) -> impl Iterator<Item = &BaselineRow> {
        self.rows.iter().filter(|(_, c)| !c).map(|(r, _)| r)
    }
}

/// One record of the file; an error (naming the record) when impl, B, N or median_ms is missing.
fn row(r: &Value, default_kernel: &str) -> std::result::Result<BaselineRow, String> {
    let malformed = || format!("malformed record {r}");
    let imp = r["impl"].as_str().ok_or_else(malformed)?;
    let median_ms = r["median_ms"].as_f64().ok_or_else(malformed)?;
    let mut shape = Vec::new();
    let mut case = Vec::new();
    for dim in DIMS {
        match r[dim].as_u64() {
            Some(v) => {
                let v = usize::try_from(v).map_err(|_| malformed())?;
                shape.push(v);
                case.push(format!("{dim}{v}"));
            }
            None if dim == "B" || dim == "N" => return Err(malformed()),
            None => {}
        }
    }
    let errors = r
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("max_abs_err_vs_"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Ok(BaselineRow {
        imp: imp.into(),
        kernel: r["kernel"].as_str().unwrap_or(default_kernel).into(),
        case: case.join("x"),
        shape,
        dtype: r["dtype"].as_str().unwrap_or("?").into(),
        median_ms,
        runs: r["runs"].as_f64().unwrap_or(f64::NAN),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"torch": "2.9.0", "device": "H100", "records": [
        {"impl": "mode_a_loop", "B": 16, "N": 4096, "dtype": "complex128", "median_ms": 2694.0,
         "runs": 3, "min_ms": 2690.0, "max_abs_err_vs_dense": 1e-9},
        {"impl": "sdpa", "kernel": "hyp_attn_forward", "B": 2, "H": 8, "N": 1024, "D": 64,
         "median_ms": 0.5}
    ]}"#;

    #[test]
    fn rows_keep_the_original_record_layout() {
        let mut tb = TorchBaseline::parse(FILE, "bk_core_forward").expect("parses");
        assert_eq!(tb.torch, Some(Value::from("2.9.0")));
        let bk = tb.claim("bk_core_forward");
        assert_eq!(bk.len(), 1);
        let recs = bk[0].records();
        let got: Vec<(&str, &str, &str, f64)> = recs
            .iter()
            .map(|r| {
                (
                    r.backend.as_str(),
                    r.case.as_str(),
                    r.metric.as_str(),
                    r.value,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("torch:mode_a_loop", "B16xN4096", "time_median", 2_694_000.0),
                ("torch:mode_a_loop", "B16xN4096", "runs", 3.0),
                (
                    "torch:mode_a_loop",
                    "B16xN4096",
                    "max_abs_err_vs_dense",
                    1e-9
                ),
            ]
        );
        assert_eq!(
            (recs[0].shape.as_slice(), recs[0].dtype.as_str()),
            (&[16, 4096][..], "complex128")
        );
        let rest: Vec<&BaselineRow> = tb.unclaimed().collect();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].case.as_str(), rest[0].dtype.as_str()),
            ("B2xH8xN1024xD64", "?")
        );
        assert!(rest[0].runs.is_nan());
        assert_eq!(
            tb.median_ms("sdpa", "hyp_attn_forward", &[2, 8, 1024, 64]),
            Some(0.5)
        );
    }

    #[test]
    fn a_record_without_n_is_refused_by_name() {
        let err = TorchBaseline::parse(
            r#"{"records": [{"impl": "x", "B": 1, "median_ms": 1}]}"#,
            "k",
        )
        .expect_err("refused");
        assert!(err.starts_with("malformed record {"), "{err}");
    }
}
