//! The fused LayerNorm + hyperbolic projection family of the suite: golden fixtures
//! (`fixtures/hyperbolic/`, gen.py), f64 against the oracle, f32 against f64 on the same inputs,
//! the f32 image inside the ball (design hyperbolic.md §5, §16).

use muse_reference::hyp_ln::{HypLn, HypLnArgs, HypLnConfig};
use muse_reference::{Backend, Cpu, Dtype};
use ndarray::{Ix1, Ix2};

use super::hyp_checks::{tensor, Rule};
use crate::fixtures::Manifest;
use crate::report::Site;
use crate::tolerance::tol;
use crate::{Error, Record, Target};

/// What a case runs: one fixture.
#[derive(Debug, Clone)]
pub struct Spec(pub String);

/// One case per fixture, named `hyp_ln/<fixture>`.
pub fn cases(m: &Manifest) -> Vec<(String, Spec)> {
    m.family("hyp_ln")
        .map(|f| (format!("hyp_ln/{}", f.name), Spec(f.name.clone())))
        .collect()
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

fn flat<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// Forward and backward in f64 (oracle) and f32 (against the f64 reference).
pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    let fx = m.case(&spec.0)?;
    let bad = |message: String| Error::Fixture {
        case: fx.name.clone(),
        message,
    };
    let x = m.array::<Ix2>(fx, "x")?;
    let (gamma, beta) = (m.array::<Ix1>(fx, "gamma")?, m.array::<Ix1>(fx, "beta_ln")?);
    let g = m.array::<Ix2>(fx, "g")?;
    let cfg = HypLnConfig::new(fx.param_f64("c")?)
        .eps(fx.param_f64("eps")?)
        .mode(
            fx.param_str("mode")?
                .parse()
                .map_err(|e| bad(format!("{e}")))?,
        );
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg)?;
    let case = format!("hyp_ln/{}", fx.name);
    let shape = [args.rows(), args.dim()];
    let mut out = Vec::new();
    for dtype in [Dtype::F64, Dtype::F32] {
        let fs = Site {
            kernel: "hyp_ln_fwd",
            backend: B::NAME,
            case: &case,
            shape: &shape,
            dtype: dtype.name(),
        };
        let bs = Site {
            kernel: "hyp_ln_bwd",
            ..fs
        };
        let got = be.hyp_ln(&args, dtype)?;
        let grad = be.hyp_ln_grad(&args, g.view(), dtype)?;
        let (want_y, want_out, want_g) = match dtype {
            Dtype::F64 => (
                m.array::<Ix2>(fx, "y")?,
                m.array::<Ix2>(fx, "out")?,
                [
                    flat(&m.array::<Ix2>(fx, "dx")?),
                    flat(&m.array::<Ix1>(fx, "dgamma")?),
                    flat(&m.array::<Ix1>(fx, "dbeta_ln")?),
                    flat(&m.array::<Ix1>(fx, "dc")?),
                ],
            ),
            _ => {
                let w = Cpu.hyp_ln(&args, Dtype::F64)?;
                let wg = Cpu.hyp_ln_grad(&args, g.view(), Dtype::F64)?;
                (
                    w.y,
                    w.out,
                    [
                        flat(&wg.dx),
                        flat(&wg.dgamma),
                        flat(&wg.dbeta_ln),
                        vec![wg.dc],
                    ],
                )
            }
        };
        let (rule, grule) = match dtype {
            Dtype::F64 => (Rule::F64, Rule::F64),
            _ => (
                Rule::Elem(tol::HYP_LN_F32),
                Rule::Scaled {
                    bound: tol::HYP_LN_GRAD_F32,
                    floor: f64::MIN_POSITIVE,
                },
            ),
        };
        out.extend(tensor(&fs, "y", &flat(&got.y), &flat(&want_y), rule));
        out.extend(tensor(&fs, "out", &flat(&got.out), &flat(&want_out), rule));
        let s = cfg.c.sqrt();
        let outside = got
            .out
            .rows()
            .into_iter()
            .filter(|o| (s * o.dot(o).sqrt()).partial_cmp(&1.0) != Some(std::cmp::Ordering::Less))
            .count();
        out.push(fs.record(
            "rows_outside_ball",
            outside as f64,
            "",
            Some(Target::AtMost(0.0)),
        ));
        let got_g = [
            flat(&grad.dx),
            flat(&grad.dgamma),
            flat(&grad.dbeta_ln),
            vec![grad.dc],
        ];
        for ((name, gv), wv) in ["dx", "dgamma", "dbeta_ln", "dc"]
            .iter()
            .zip(&got_g)
            .zip(&want_g)
        {
            // dc is one number: relative to max(1, |dc|) (tol::HYP_LN_GRAD_F32).
            let rule = match (grule, *name) {
                (Rule::Scaled { bound, .. }, "dc") => Rule::Scaled { bound, floor: 1.0 },
                (r, _) => r,
            };
            out.extend(tensor(&bs, name, gv, wv, rule));
        }
    }
    Ok(out)
}
