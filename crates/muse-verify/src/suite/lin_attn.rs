//! The tangent-space linear attention family of the suite: golden fixtures (explicit masked f64
//! oracle, gen.py), f64 forward and backward against the oracle, f32 against f64 (design
//! hyperbolic.md §9, §16).

use muse_reference::lin_attn::{LinAttn, LinAttnArgs, LinAttnConfig};
use muse_reference::{Backend, Cpu, Dtype};
use ndarray::Ix4;

use super::hyp_checks::{tensor, Rule};
use crate::fixtures::Manifest;
use crate::report::Site;
use crate::tolerance::tol;
use crate::Record;

/// What a case runs: one fixture.
#[derive(Debug, Clone)]
pub struct Spec(pub String);

/// One case per fixture, named `lin_attn/<fixture>`.
pub fn cases(m: &Manifest) -> Vec<(String, Spec)> {
    m.family("lin_attn")
        .map(|f| (format!("lin_attn/{}", f.name), Spec(f.name.clone())))
        .collect()
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

fn flat(a: &ndarray::Array4<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// o, dq, dk, dv in f64 (oracle) and f32 (against the f64 reference).
pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    let fx = m.case(&spec.0)?;
    let [q, k, v, d_o] = ["q", "k", "v", "d_o"].map(|s| m.array::<Ix4>(fx, s));
    let (q, k, v, d_o) = (q?, k?, v?, d_o?);
    let cfg = LinAttnConfig {
        causal: fx.param_bool("causal"),
        eps: fx.param_f64("eps")?,
    };
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg)?;
    let case = format!("lin_attn/{}", fx.name);
    let shape = [q.dim().0, q.dim().1, q.dim().2, q.dim().3, v.dim().3];
    let mut out = Vec::new();
    for dtype in [Dtype::F64, Dtype::F32] {
        let fs = Site {
            kernel: "lin_attn_fwd",
            backend: B::NAME,
            case: &case,
            shape: &shape,
            dtype: dtype.name(),
        };
        let bs = Site {
            kernel: "lin_attn_bwd",
            ..fs
        };
        let o = be.lin_attn(&args, dtype)?;
        let g = be.lin_attn_grad(&args, d_o.view(), dtype)?;
        let (want_o, want_g) = match dtype {
            Dtype::F64 => (
                m.array::<Ix4>(fx, "o")?,
                [
                    m.array::<Ix4>(fx, "dq")?,
                    m.array::<Ix4>(fx, "dk")?,
                    m.array::<Ix4>(fx, "dv")?,
                ],
            ),
            _ => {
                let wg = Cpu.lin_attn_grad(&args, d_o.view(), Dtype::F64)?;
                (Cpu.lin_attn(&args, Dtype::F64)?, [wg.dq, wg.dk, wg.dv])
            }
        };
        // One joint scale for the three gradients (dq vanishes identically at N = 1 or d = 1).
        let gscale = want_g
            .iter()
            .flat_map(|a| a.iter())
            .fold(0.0f64, |mx, x| mx.max(x.abs()));
        let (rule, grule) = match dtype {
            Dtype::F64 => (
                Rule::F64,
                Rule::Scaled {
                    bound: tol::HYP_F64_REL,
                    floor: gscale.max(1e-300),
                },
            ),
            _ => (
                Rule::Elem(tol::LIN_ATTN_CHUNKED_F32),
                Rule::Scaled {
                    bound: tol::LIN_ATTN_GRAD_F32,
                    floor: gscale.max(1e-300),
                },
            ),
        };
        out.extend(tensor(&fs, "o", &flat(&o), &flat(&want_o), rule));
        for ((name, gv), wv) in ["dq", "dk", "dv"]
            .iter()
            .zip([&g.dq, &g.dk, &g.dv])
            .zip(&want_g)
        {
            out.extend(tensor(&bs, name, &flat(gv), &flat(wv), grule));
        }
    }
    Ok(out)
}
