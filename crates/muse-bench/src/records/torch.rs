//! PyTorch baselines measured on the same GPU in the same run (`ci/baselines/torch_*.py`), as
//! records beside the kernels' own.
//!
//! The file is `{"torch": <version or object>, "records": [{"impl", "kernel"?, "B", "H"?, "N",
//! "M"?, "D"?, "Dv"?, "dtype"?, "median_ms", "p20_ms"?, "p80_ms"?, "runs"?,
//! "max_abs_err_vs_<oracle>"?, "error"?, ...}]}` (the layouts of `torch_bk_core.py` and
//! `torch_hyp.py`). A record without `kernel` belongs to the loader's default kernel
//! (`torch_bk_core.py` predates the field). The shape is the non-null dims of B, H, N, M, D, Dv
//! in that order, the case id the same dims joined, e.g. `B16xN4096`. A record with a non-null
//! `error` (an OOM, a skipped case) is no measurement: it is kept as a message for the meta.
//!
//! Each family [`claim`](TorchBaseline::claim)s the rows of its kernels, records them and adds
//! its speedups (looking GPU times up by shape); rows no family claims are recorded at the end.

use std::path::Path;

use muse_verify::report::Site;
use muse_verify::Record;
use serde_json::Value;

use crate::{Error, Result};

/// Shape dims of a baseline record, in shape order; B and N are required.
const DIMS: [&str; 6] = ["B", "H", "N", "M", "D", "Dv"];

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
    /// 20th and 80th percentiles in milliseconds, where the file has them.
    pub p20_p80_ms: Option<(f64, f64)>,
    /// Timed runs (NaN when absent).
    pub runs: f64,
    /// `max_abs_err_vs_<oracle>` / `max_rel_err_vs_<oracle>` fields and the protocol fields of
    /// [`PROTOCOL_KEYS`], by name.
    pub errors: Vec<(String, f64)>,
}

/// Numeric fields of a baseline record that become records of the same name (the model
/// benchmark's protocol: mean time, tokens/s, peak memory, compile time).
pub const PROTOCOL_KEYS: [&str; 5] = ["mean_ms", "std_ms", "tokens_per_s", "peak_mib", "compile_s"];

impl BaselineRow {
    /// The backend of its records: `torch:<impl>`.
    pub fn backend(&self) -> String {
        format!("torch:{}", self.imp)
    }

    /// `time_median` (µs), `time_p20` and `time_p80` (µs, where present), `runs` and each
    /// `max_abs_err_vs_<oracle>`, at backend `torch:<impl>`.
    pub fn records(&self) -> Vec<Record> {
        let backend = self.backend();
        let site = Site {
            kernel: &self.kernel,
            backend: &backend,
            case: &self.case,
            shape: &self.shape,
            dtype: &self.dtype,
        };
        let mut out = vec![site.record("time_median", self.median_ms * 1e3, "us", None)];
        if let Some((p20, p80)) = self.p20_p80_ms {
            out.push(site.record("time_p20", p20 * 1e3, "us", None));
            out.push(site.record("time_p80", p80 * 1e3, "us", None));
        }
        out.push(site.record("runs", self.runs, "", None));
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
    /// The records with an `error`, as `<impl> <kernel> <case>: <error>`, for the report's meta.
    pub errors: Vec<String>,
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
        let mut out = Self {
            torch: json.get("torch").cloned(),
            ..Self::default()
        };
        for r in json["records"].as_array().into_iter().flatten() {
            if let Some(error) = r.get("error").filter(|e| !e.is_null()) {
                let (_, case) = shape(r);
                let error = error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_string);
                let name = |key: &str| r[key].as_str().unwrap_or("?").to_string();
                out.errors.push(format!(
                    "{} {} {case}: {error}",
                    name("impl"),
                    name("kernel")
                ));
                continue;
            }
            out.rows.push((row(r, default_kernel)?, false));
        }
        Ok(out)
    }

    /// Adds the rows and errors of another file; the first `torch` field found is kept, the
    /// others appended as a list.
    pub fn merge(&mut self, other: Self) {
        self.torch = match (self.torch.take(), other.torch) {
            (None, b) => b,
            (a, None) => a,
            (Some(Value::Array(mut a)), Some(b)) => {
                a.push(b);
                Some(Value::Array(a))
            }
            (Some(a), Some(b)) if a == b => Some(a),
            (Some(a), Some(b)) => Some(Value::Array(vec![a, b])),
        };
        self.errors.extend(other.errors);
        self.rows.extend(other.rows);
    }

    /// Median time (ms) of `imp` computing `kernel` at `shape`, if the file has it.
    pub fn median_ms(&self, imp: &str, kernel: &str, shape: &[usize]) -> Option<f64> {
        self.rows
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.imp == imp && r.kernel == kernel && r.shape == shape)
            .map(|r| r.median_ms)
    }

    /// Field `key` (one of [`PROTOCOL_KEYS`] or an error field) of `imp` computing `kernel` at
    /// `shape`, if the file has it.
    pub fn value(&self, imp: &str, kernel: &str, shape: &[usize], key: &str) -> Option<f64> {
        self.rows
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.imp == imp && r.kernel == kernel && r.shape == shape)
            .and_then(|r| r.errors.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
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

/// The non-null dims of a record, in [`DIMS`] order, and its case id (`B16xN4096`); dims that
/// are not non-negative integers count as absent.
fn shape(r: &Value) -> (Vec<usize>, String) {
    let dims: Vec<(&str, usize)> = DIMS
        .iter()
        .filter_map(|&dim| Some((dim, usize::try_from(r[dim].as_u64()?).ok()?)))
        .collect();
    let case = dims
        .iter()
        .map(|(d, v)| format!("{d}{v}"))
        .collect::<Vec<_>>();
    (dims.iter().map(|&(_, v)| v).collect(), case.join("x"))
}

/// One measurement of the file; an error (naming the record) when impl, B, N or median_ms is
/// missing.
fn row(r: &Value, default_kernel: &str) -> std::result::Result<BaselineRow, String> {
    let malformed = || format!("malformed record {r}");
    let imp = r["impl"].as_str().ok_or_else(malformed)?;
    let median_ms = r["median_ms"].as_f64().ok_or_else(malformed)?;
    if r["B"].as_u64().is_none() || r["N"].as_u64().is_none() {
        return Err(malformed());
    }
    let (shape, case) = shape(r);
    let p20_p80_ms = r["p20_ms"].as_f64().zip(r["p80_ms"].as_f64());
    let errors = r
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            k.starts_with("max_abs_err_vs_")
                || k.starts_with("max_rel_err_vs_")
                || PROTOCOL_KEYS.contains(&k.as_str())
        })
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Ok(BaselineRow {
        imp: imp.into(),
        kernel: r["kernel"].as_str().unwrap_or(default_kernel).into(),
        case,
        shape,
        dtype: r["dtype"].as_str().unwrap_or("?").into(),
        median_ms,
        p20_p80_ms,
        runs: r["runs"].as_f64().unwrap_or(f64::NAN),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of `ci/baselines/torch_bk_core.py`.
    const BK_CORE: &str = r#"{"torch": "2.9.0", "device": "H100", "records": [
        {"impl": "mode_a_loop", "B": 16, "N": 4096, "dtype": "complex128", "median_ms": 2694.0,
         "runs": 3, "min_ms": 2690.0, "max_ms": 2699.0, "max_abs_err_vs_dense": 1e-9},
        {"impl": "ratio_loop", "B": 64, "N": 4096, "dtype": "complex64", "median_ms": 80.0,
         "runs": 3, "min_ms": 79.0, "max_ms": 81.0}
    ]}"#;

    /// The layout of `ci/baselines/torch_hyp.py`: null dims, percentiles, error records.
    const HYP: &str = r#"{"torch": {"version": "2.9.0", "cuda": "13.0"}, "run": {}, "records": [
        {"impl": "sdpa_flash", "kernel": "attn_fwd", "B": 8, "H": 8, "N": 1024, "M": 1024,
         "D": 64, "Dv": 64, "dtype": "bf16", "median_ms": 0.05, "p20_ms": 0.04, "p80_ms": 0.06,
         "runs": 200, "peak_bytes": 0},
        {"impl": "torch_copy", "kernel": "d2d_copy", "B": 1, "H": 1, "N": 268435456, "M": null,
         "D": null, "Dv": null, "dtype": "f32", "median_ms": 0.4, "p20_ms": 0.4, "p80_ms": 0.41,
         "runs": 200},
        {"impl": "torch_dense_hyp", "kernel": "attn_fwd", "B": 8, "H": 8, "N": 16384, "M": 16384,
         "D": 64, "Dv": 64, "dtype": "f32", "median_ms": null, "p20_ms": null, "p80_ms": null,
         "runs": 0, "error": "OutOfMemoryError: CUDA out of memory"},
        {"impl": "section:dist", "kernel": null, "B": null, "H": null, "N": null, "M": null,
         "D": null, "Dv": null, "dtype": null, "median_ms": null, "runs": 0, "error": "boom"}
    ]}"#;

    fn keys(recs: &[Record]) -> Vec<(String, String, String, f64)> {
        recs.iter()
            .map(|r| (r.backend.clone(), r.case.clone(), r.metric.clone(), r.value))
            .collect()
    }

    #[test]
    fn bk_core_rows_keep_their_record_layout() {
        let mut tb = TorchBaseline::parse(BK_CORE, "bk_core_forward").expect("parses");
        assert_eq!(tb.torch, Some(Value::from("2.9.0")));
        let rows = tb.claim("bk_core_forward");
        assert_eq!(rows.len(), 2);
        let s = |b: &str, c: &str, m: &str, v: f64| (b.into(), c.into(), m.into(), v);
        assert_eq!(
            keys(&rows[0].records()),
            [
                s("torch:mode_a_loop", "B16xN4096", "time_median", 2_694_000.0),
                s("torch:mode_a_loop", "B16xN4096", "runs", 3.0),
                s(
                    "torch:mode_a_loop",
                    "B16xN4096",
                    "max_abs_err_vs_dense",
                    1e-9
                ),
            ]
        );
        let r = &rows[1].records()[0];
        assert_eq!(
            (r.kernel.as_str(), r.shape.as_slice()),
            ("bk_core_forward", &[64, 4096][..])
        );
        assert_eq!(
            (r.dtype.as_str(), rows[1].records().len()),
            ("complex64", 2)
        );
        assert_eq!(tb.unclaimed().count(), 0);
        assert!(tb.errors.is_empty());
    }

    #[test]
    fn hyp_rows_skip_null_dims_and_keep_errors_apart() {
        let mut tb = TorchBaseline::parse(HYP, "unused").expect("parses");
        assert!(tb.torch.as_ref().is_some_and(Value::is_object));
        assert_eq!(
            tb.errors,
            [
                "torch_dense_hyp attn_fwd B8xH8xN16384xM16384xD64xDv64: OutOfMemoryError: CUDA out of memory",
                "section:dist ? : boom",
            ]
        );
        let shape = [8, 8, 1024, 1024, 64, 64];
        assert_eq!(tb.median_ms("sdpa_flash", "attn_fwd", &shape), Some(0.05));
        let attn = tb.claim("attn_fwd");
        let metrics: Vec<String> = attn[0].records().iter().map(|r| r.metric.clone()).collect();
        assert_eq!(metrics, ["time_median", "time_p20", "time_p80", "runs"]);
        let rest: Vec<&BaselineRow> = tb.unclaimed().collect();
        assert_eq!((rest.len(), rest[0].case.as_str()), (1, "B1xH1xN268435456"));
    }

    #[test]
    fn a_measurement_without_n_is_refused_by_name() {
        let text = r#"{"records": [{"impl": "x", "B": 1, "median_ms": 1}]}"#;
        let err = TorchBaseline::parse(text, "k").expect_err("refused");
        assert!(err.starts_with("malformed record {"), "{err}");
    }
}
