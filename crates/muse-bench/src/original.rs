//! The original's Phase 8 benchmark files (seed 000, task 30) that muse's inference, memory and
//! training kernels feed, as sections of a `muse bench` report: for each, the records of the run
//! that answer it, written as `<stem>-<file stem>.json` and `.md` (and an SVG where a curve says
//! more), every record tagged with the original's file name (`Record::original`), so a reader of
//! the original's `phase8_quantization_benchmark.json` finds muse's answer under the same name.
//!
//! ```
//! use muse_verify::Report;
//! let mut r = Report::new("cpu");
//! r.records.push(muse_verify::report::Site { kernel: "w4a8_gemm", backend: "cuda", case: "M1",
//!     shape: &[1], dtype: "w4a8" }.record("speedup_vs_cublas_fp16", 1.4, "x", None));
//! let dir = std::env::temp_dir().join("muse-original-doc");
//! let files = muse_bench::original::write_sections(&r, &dir, "kpi-cuda")?;
//! assert!(files.iter().any(|f| f.ends_with("kpi-cuda-phase8_quantization_benchmark.json")));
//! # Ok::<(), muse_bench::Error>(())
//! ```

use std::path::{Path, PathBuf};

use muse_verify::plot::{curves, Series};
use muse_verify::{Record, Report};

use crate::Result;

/// One of the original's benchmark files and the records that answer it.
pub struct Section {
    /// The original's output file, e.g. `phase8_quantization_benchmark.json`.
    pub file: &'static str,
    /// What the original measured there (seed 000, task 30).
    pub about: &'static str,
    select: fn(&Record) -> bool,
    /// Meta keys of the run (beyond its provenance) that describe these records.
    meta: &'static [&'static str],
    /// Plot tokens/s of the training step against N (the long-context section).
    plot_train_sweep: bool,
}

fn kernel_in(r: &Record, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| r.kernel.starts_with(p))
}

fn memory_metric(m: &str) -> bool {
    [
        "peak",
        "bytes",
        "fragmentation",
        "ratio",
        "_mib",
        "reduction",
        "hits",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// The three files the issue names: quantisation, memory profile, long context.
pub const SECTIONS: &[Section] = &[
    Section {
        file: "phase8_quantization_benchmark.json",
        about: "task 30.4: INT8 hyperbolic distance (target 2×), INT4 weights with 8-bit activations (target 4×), the 4-bit KV cache (4× smaller); muse's held-out ΔPPL of each quantisation is in reports/inference/gpu-kjv-small-ppl/",
        select: |r| kernel_in(r, &["hyp_int8", "w4a8", "kv4_decode"]),
        meta: &[],
        plot_train_sweep: false,
    },
    Section {
        file: "phase8_memory_profile.json",
        about: "task 30.2: device memory of the model and its kernels: the memory pool (allocation < 1 µs, fragmentation < 20 %), the KV cache's bytes, the training step's and the forward's peaks, the VRAM study",
        select: |r| {
            kernel_in(r, &["pool", "vram_"])
                || (kernel_in(r, &["kv4_decode", "model_train_step", "model_forward", "gpt_train_step"])
                    && memory_metric(&r.metric))
        },
        meta: &["vram_method", "pool_method"],
        plot_train_sweep: false,
    },
    Section {
        file: "phase8_long_context_benchmark.json",
        about: "task 30.6: long sequences: the training step's tokens/s and peak as N grows (B·N = 8192), decode from the 4-bit KV cache at 8k–16k context, block-sparse attention at N 4096–16384, the O(N) scaling exponents",
        select: |r| {
            kernel_in(r, &["kv4_decode", "sparse_attn", "model_train_step", "gpt_train_step"])
                || r.metric == "scaling_exponent"
        },
        meta: &["torch_errors"],
        plot_train_sweep: true,
    },
];

/// The run's provenance, kept in every section.
const PROVENANCE: [&str; 11] = [
    "gpu",
    "arch",
    "compute_capability",
    "driver_cuda",
    "nvcc",
    "kernel_sources_sha256",
    "timing",
    "sanitizer_memcheck",
    "sanitizer_racecheck",
    "torch",
    "device",
];

/// (N, tokens/s) of `kernel`'s records on `backend` with `dtype` at B·N = SWEEP_TOKENS, N ascending.
fn sweep(records: &[Record], (kernel, backend, dtype): (&str, &str, &str)) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| {
            r.kernel == kernel
                && r.backend == backend
                && r.dtype == dtype
                && r.metric == "tokens_per_s"
                && r.shape.len() >= 2
                && r.shape[0] * r.shape[1] == crate::train::SWEEP_TOKENS
        })
        .map(|r| (r.shape[1] as f64, r.value))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.dedup_by(|a, b| a.0 == b.0);
    pts
}

/// The long-context plot's curves: muse's step and PyTorch's (Phase 8 and the GPT).
const SWEEPS: [(&str, &str, &str, &str); 3] = [
    (
        crate::train::KERNEL,
        "cuda",
        "f32+tf32",
        "muse Phase 8 (CUDA, f32 + TF32)",
    ),
    (
        crate::train::KERNEL,
        "torch:torch_eager_bf16",
        "bf16",
        "PyTorch Phase 8 (eager, bf16)",
    ),
    (
        "gpt_train_step",
        "torch:torch_eager_bf16",
        "bf16",
        "PyTorch GPT, same D, L, H (bf16)",
    ),
];

/// Writes every section of `report` with at least one record into `dir` as
/// `<stem>-<file stem>.json` / `.md` (and `.svg`); returns the files written.
pub fn write_sections(report: &Report, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in SECTIONS {
        let records: Vec<Record> = report
            .records
            .iter()
            .filter(|r| (s.select)(r))
            .map(|r| Record {
                original: Some(s.file.to_string()),
                ..r.clone()
            })
            .collect();
        if records.is_empty() {
            continue;
        }
        let base = format!("{stem}-{}", s.file.trim_end_matches(".json"));
        let mut sub = Report {
            records,
            meta: report
                .meta
                .iter()
                .filter(|(k, _)| PROVENANCE.contains(&k.as_str()) || s.meta.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..report.clone()
        };
        sub.meta.insert("original_file".into(), s.file.into());
        sub.meta.insert("original_about".into(), s.about.into());
        let title = format!("The original's `{}`, answered by muse ({stem})", s.file);
        if s.plot_train_sweep {
            sub.meta.insert("plot".into(), format!("{base}.svg").into());
            let series: Vec<Series> = SWEEPS
                .iter()
                .map(|&(k, b, d, label)| Series {
                    label: label.into(),
                    points: sweep(&sub.records, (k, b, d)),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            if !series.is_empty() {
                let svg = dir.join(format!("{base}.svg"));
                curves(
                    &svg,
                    "training tokens/s against N (B·N = 8192 a step)",
                    "N",
                    "tokens/s",
                    &series,
                )?;
                out.push(svg);
            } else {
                sub.meta.remove("plot");
            }
        }
        let (json, md) = sub.write(dir, &base, &title)?;
        out.extend([json, md]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use muse_verify::report::Site;

    use super::*;

    fn rec(
        kernel: &str,
        backend: &str,
        shape: &[usize],
        dtype: &str,
        metric: &str,
        v: f64,
    ) -> Record {
        Site {
            kernel,
            backend,
            case: "c",
            shape,
            dtype,
        }
        .record(metric, v, "", None)
    }

    #[test]
    fn each_file_gets_its_records_tagged_and_the_sweep_is_plotted() {
        let mut r = Report::new("test");
        r.records = vec![
            rec(
                "w4a8_gemm",
                "cuda",
                &[1],
                "w4a8",
                "speedup_vs_cublas_fp16",
                1.4,
            ),
            rec("hyp_int8", "cuda", &[1], "int8", "time_median", 3.0),
            rec("pool", "cuda", &[1], "-", "p99_ns_per_pair", 20.0),
            rec(
                "bk_core_forward",
                "cuda",
                &[16, 4096],
                "f32",
                "time_median",
                15.0,
            ),
        ];
        for (b, n, tps) in [(32, 256, 178e3), (8, 1024, 176e3), (1, 8192, 158e3)] {
            r.records.push(rec(
                crate::train::KERNEL,
                "cuda",
                &[b, n, 512],
                "f32+tf32",
                "tokens_per_s",
                tps,
            ));
            r.records.push(rec(
                crate::train::KERNEL,
                "cuda",
                &[b, n, 512],
                "f32+tf32",
                "peak_mib",
                1100.0,
            ));
        }
        let dir = std::env::temp_dir().join(format!("muse-original-{}", std::process::id()));
        let files = write_sections(&r, &dir, "kpi-cuda").expect("written");
        let load = |f: &str| Report::load(&dir.join(format!("kpi-cuda-{f}.json"))).expect("json");
        let q = load("phase8_quantization_benchmark");
        let kernels: Vec<&str> = q.records.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(kernels, ["w4a8_gemm", "hyp_int8"]);
        assert!(q
            .records
            .iter()
            .all(|r| r.original.as_deref() == Some("phase8_quantization_benchmark.json")));
        let m = load("phase8_memory_profile");
        assert!(m.records.iter().any(|r| r.kernel == "pool"));
        assert!(
            m.records.iter().all(|r| r.metric != "tokens_per_s"),
            "memory: no throughput rows"
        );
        assert!(m.records.iter().all(|r| r.kernel != "bk_core_forward"));
        let l = load("phase8_long_context_benchmark");
        assert_eq!(
            l.records
                .iter()
                .filter(|r| r.metric == "tokens_per_s")
                .count(),
            3
        );
        let pts = sweep(&l.records, (SWEEPS[0].0, "cuda", "f32+tf32"));
        assert_eq!(
            pts.iter().map(|p| p.0).collect::<Vec<_>>(),
            [256.0, 1024.0, 8192.0]
        );
        assert!(files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "svg")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
