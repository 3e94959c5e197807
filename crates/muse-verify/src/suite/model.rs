//! The language-model family of the suite (design model.md §9): every layer and the three
//! profiles' forwards against the independent numpy oracle (fixtures/model/oracle, f64 at 1e-10,
//! f32 against the same oracle), and parity with the original's own run (fixtures/model/parity:
//! `bench-cpu` vs its CPU logits at 1e-4, `bench` vs its CUDA logits at 1e-3, the TF32 noise
//! floor of that run; see crates/muse-model/tests/parity.rs).
//!
//! The layer cases run the CPU reference only; the forward and parity cases also run the model's
//! CUDA path (f32, full-fp32 GEMMs) when the suite runs on the CUDA backend.

use std::path::{Path, PathBuf};

use muse_model::{Config, Model, Profile, Weights};
use muse_reference::model::{
    ar_ssm, fusion, htt_decode, htt_embed, rank_gating, window_attention, AttnPath, Conv, Scan,
};
use muse_reference::{Backend, Elem};
use ndarray::{Array2, Array3, ArrayD, Dimension};

use crate::fixtures::Manifest;
use crate::report::Site;
use crate::{Error, Record, Target};

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// The layers against the numpy oracle.
    OracleLayers,
    /// The three profiles' logits against the numpy oracle.
    OracleForward,
    /// `bench-cpu` against the original's CPU logits.
    ParityCpu,
    /// `bench` against the original's CUDA logits.
    ParityCuda,
    /// The exact gradient against PyTorch autograd (`model_grad.rs`).
    GradTorch,
}

/// The five cases.
pub fn cases(_: &Manifest) -> Vec<(String, Spec)> {
    [
        ("model/oracle/layers", Spec::OracleLayers),
        ("model/oracle/forward", Spec::OracleForward),
        ("model/parity/logits_cpu", Spec::ParityCpu),
        ("model/parity/logits_cuda", Spec::ParityCuda),
        (super::model_grad::CASE, Spec::GradTorch),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

/// The layer functions are the CPU reference's; the whole forward runs on both backends.
pub fn cpu_only(spec: &Spec) -> bool {
    *spec == Spec::OracleLayers
}

/// f32 logits on the suite's backend.
fn forward32<B: Backend>(
    case: &str,
    m: &Model,
    ids: &Array2<usize>,
    p: Profile,
) -> crate::Result<Array3<f32>> {
    if B::NAME == "cuda" {
        cuda_forward(m, ids, p).map_err(|e| fail(case, e))
    } else {
        m.forward_cpu::<f32>(ids.view(), p)
            .map_err(|e| fail(case, e))
    }
}

fn cuda_forward(m: &Model, ids: &Array2<usize>, p: Profile) -> anyhow::Result<Array3<f32>> {
    m.forward_cuda(ids.view(), p, false)
}

pub(super) fn fail(case: &str, e: impl std::fmt::Display) -> Error {
    Error::Fixture {
        case: case.into(),
        message: format!("{e:#}"),
    }
}

fn read<D: Dimension>(case: &str, path: PathBuf) -> crate::Result<ndarray::Array<f64, D>> {
    let a: ArrayD<f64> = match ndarray_npy::read_npy::<_, ArrayD<f64>>(&path) {
        Ok(a) => a,
        Err(_) => ndarray_npy::read_npy::<_, ArrayD<f32>>(&path)
            .map_err(|source| Error::Npy {
                path: path.clone(),
                source,
            })?
            .mapv(f64::from),
    };
    a.into_dimensionality()
        .map_err(|e| fail(case, format!("{}: {e}", path.display())))
}

pub(super) fn read_ids(path: PathBuf) -> crate::Result<Array2<usize>> {
    let ids: Array2<i64> =
        ndarray_npy::read_npy(&path).map_err(|source| Error::Npy { path, source })?;
    Ok(ids.mapv(|t| t as usize))
}

pub(super) fn load(case: &str, dir: &Path, cfg: Config) -> crate::Result<Model> {
    Weights::load(&cfg, &dir.join("weights.safetensors"))
        .map(Model::new)
        .map_err(|e| fail(case, e))
}

/// max|got − want| / max|want|.
fn rel<F: Elem, D: Dimension>(got: &ndarray::Array<F, D>, want: &ndarray::Array<f64, D>) -> f64 {
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |a, (g, w)| a.max((g.to_f64_exact() - w).abs()));
    err / scale
}

struct Rows<'a> {
    backend: &'a str,
    case: &'a str,
    out: Vec<Record>,
}

impl Rows<'_> {
    fn push(&mut self, kernel: &str, shape: &[usize], dtype: &str, value: f64, bound: f64) {
        let site = Site {
            kernel,
            backend: self.backend,
            case: self.case,
            shape,
            dtype,
        };
        self.out
            .push(site.record("max_rel_err", value, "", Some(Target::AtMost(bound))));
    }
}

/// f32 against the f64 oracle: 1e-5 relative per layer (design §9) where the maths is
/// well-conditioned. The original's compat attention saturates its logmap0 clamp, whose result in
/// f32 is quantised by one ulp of 1 − √c·(1/√c − 1e-5) (≈ 3e-4 relative of the output).
fn f32_bound(path: AttnPath) -> f64 {
    match path {
        AttnPath::Exact | AttnPath::ExactKv(_) => 1e-5,
        AttnPath::FastBench { .. } | AttnPath::TorchBall => 3e-4,
    }
}

fn layers<F: Elem>(
    rows: &mut Rows<'_>,
    m: &Model,
    dir: &Path,
    dtype: &str,
    f64_run: bool,
) -> crate::Result<()> {
    let case = rows.case.to_string();
    let w = m.weights().model::<F>();
    let d = m.config().dims();
    let x64: Array3<f64> = read(&case, dir.join("x.npy"))?;
    let x = x64.mapv(F::of);
    let ids = read_ids(dir.join("ids.npy"))?;
    let shape = [x.dim().0, x.dim().1, d.d_model];
    let bound = |b32: f64| if f64_run { 1e-10 } else { b32 };
    let want = |n: &str| read::<ndarray::Ix3>(&case, dir.join(format!("{n}.npy")));
    rows.push(
        "model/htt_embed",
        &shape,
        dtype,
        rel(
            &htt_embed(&w.htt, ids.view(), d.d_model),
            &want("htt_embed")?,
        ),
        bound(1e-5),
    );
    rows.push(
        "model/htt_decode",
        &shape,
        dtype,
        rel(&htt_decode(&w.htt, x.view(), d.vocab), &want("htt_decode")?),
        bound(1e-5),
    );
    let b0 = &w.blocks[0];
    let ssm = |s, c| ar_ssm(&b0.ssm, x.view(), s, c);
    rows.push(
        "model/ar_ssm_cumsum_causal",
        &shape,
        dtype,
        rel(
            &ssm(Scan::Cumsum, Conv::Causal),
            &want("ar_ssm_cumsum_causal")?,
        ),
        bound(1e-5),
    );
    rows.push(
        "model/ar_ssm_pseudo_centered",
        &shape,
        dtype,
        rel(
            &ssm(Scan::Pseudo { bs: 4 }, Conv::Centered),
            &want("ar_ssm_4_centered")?,
        ),
        bound(1e-5),
    );
    for (name, path) in [
        ("exact", AttnPath::Exact),
        ("fast", AttnPath::FastBench { tf32: false }),
        ("fast_tf32", AttnPath::FastBench { tf32: true }),
        ("torch_ball", AttnPath::TorchBall),
    ] {
        let got = window_attention(&b0.attn, x.view(), d.heads, d.window, path)?;
        rows.push(
            &format!("model/attn_{name}"),
            &shape,
            dtype,
            rel(&got, &want(&format!("attn_{name}"))?),
            bound(f32_bound(path)),
        );
    }
    Ok(())
}

/// Runs one case (on the CPU).
pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    if *spec == Spec::GradTorch {
        return super::model_grad::run(be, m);
    }
    let root = m.root.join("model");
    let case_name = cases(m)
        .into_iter()
        .find(|(_, s)| s == spec)
        .map(|(n, _)| n)
        .unwrap_or_default();
    let mut rows = Rows {
        backend: B::NAME,
        case: &case_name,
        out: Vec::new(),
    };
    match spec {
        Spec::OracleLayers | Spec::OracleForward => {
            let dir = root.join("oracle");
            let cfg_path = dir.join("config.json");
            let cfg =
                Config::resolve(&cfg_path.to_string_lossy()).map_err(|e| fail(&case_name, e))?;
            let model = load(&case_name, &dir, cfg)?;
            if *spec == Spec::OracleLayers {
                layers::<f64>(&mut rows, &model, &dir, "f64", true)?;
                layers::<f32>(&mut rows, &model, &dir, "f32", false)?;
            } else {
                let ids = read_ids(dir.join("ids.npy"))?;
                let shape = [ids.nrows(), ids.ncols(), model.config().vocab_size];
                for (name, p) in [
                    ("exact", Profile::Exact),
                    ("bench", Profile::Bench),
                    ("bench_cpu", Profile::BenchCpu),
                ] {
                    let want =
                        read::<ndarray::Ix3>(&case_name, dir.join(format!("logits_{name}.npy")))?;
                    if B::NAME == "cpu" {
                        let got = model
                            .forward_cpu::<f64>(ids.view(), p)
                            .map_err(|e| fail(&case_name, e))?;
                        rows.push(
                            &format!("model/logits_{name}"),
                            &shape,
                            "f64",
                            rel(&got, &want),
                            1e-10,
                        );
                    }
                    if B::NAME == "cpu" && p != Profile::Bench {
                        // bf16 GEMMs (inputs rounded, fp32 sums): design §9's 2e-2 for bf16 casts.
                        let g16 = model
                            .forward_cpu_bf16(ids.view(), p)
                            .map_err(|e| fail(&case_name, e))?;
                        rows.push(
                            &format!("model/logits_{name}"),
                            &shape,
                            "bf16",
                            rel(&g16, &want),
                            2e-2,
                        );
                    }
                    let got32 = forward32::<B>(&case_name, &model, &ids, p)?;
                    let b32 = match p {
                        Profile::Exact => 1e-5,
                        Profile::BenchCpu => 3e-4,
                        Profile::Bench => 1e-3,
                    };
                    rows.push(
                        &format!("model/logits_{name}"),
                        &shape,
                        "f32",
                        rel(&got32, &want),
                        b32,
                    );
                }
            }
        }
        Spec::GradTorch => unreachable!("dispatched above"),
        Spec::ParityCpu | Spec::ParityCuda => {
            let dir = root.join("parity");
            let cfg = Config::named("tiny").expect("a known name");
            let model = load(&case_name, &dir, cfg)?;
            let ids = read_ids(dir.join("ids.npy"))?;
            let shape = [ids.nrows(), ids.ncols(), 1000];
            let (profile, file, bound) = match spec {
                Spec::ParityCpu => (Profile::BenchCpu, "logits_cpu.npy", 1e-4),
                _ => (Profile::Bench, "logits_cuda.npy", 1e-3),
            };
            let want = read::<ndarray::Ix3>(&case_name, dir.join(file))?;
            let got = forward32::<B>(&case_name, &model, &ids, profile)?;
            rows.push(
                &format!("model/parity_{}", profile.name()),
                &shape,
                "f32",
                rel(&got, &want),
                bound,
            );
            if *spec == Spec::ParityCuda && B::NAME == "cpu" {
                // The side branch (CPU reference only) against the fusion activations the
                // original's GPU run hooked: rank weights (B, N) and the fusion output (B, N, D).
                let fw = model
                    .weights()
                    .fusion::<f32>()
                    .ok_or_else(|| fail(&case_name, "tiny has no fusion module"))?;
                let x = htt_embed(&model.weights().model::<f32>().htt, ids.view(), 64);
                let rw = read::<ndarray::Ix2>(&case_name, dir.join("act_fusion_rank_gating.npy"))?;
                let side_shape = [ids.nrows(), ids.ncols(), 64];
                rows.push(
                    "model/side_rank_gating",
                    &side_shape,
                    "f32",
                    rel(&rank_gating(&fw, x.view()), &rw),
                    1e-5,
                );
                let y = read::<ndarray::Ix3>(&case_name, dir.join("act_fusion_ssm.npy"))?;
                rows.push(
                    "model/side_fusion",
                    &side_shape,
                    "f32",
                    rel(&fusion(&fw, x.view()), &y),
                    1e-5,
                );
            }
        }
    }
    Ok(rows.out)
}
