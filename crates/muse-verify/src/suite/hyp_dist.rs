//! The pairwise distance-matrix family of the suite: golden fixtures (mpmath ball-form oracle,
//! gen.py), f64 against the oracle, f32 against f64 by the §16 distance rule, d(x, x) = 0
//! exactly (design hyperbolic.md §7, §16).

use muse_reference::hyp_dist::{forward, HypDistArgs};
use muse_reference::{Backend, Dtype};
use ndarray::Ix4;

use super::hyp_checks::{tensor, Rule};
use crate::fixtures::Manifest;
use crate::report::Site;
use crate::tolerance::tol;
use crate::{Error, Record, Target};

/// What a case runs: one fixture.
#[derive(Debug, Clone)]
pub struct Spec(pub String);

/// One case per fixture, named `hyp_dist/<fixture>`.
pub fn cases(m: &Manifest) -> Vec<(String, Spec)> {
    m.family("hyp_dist")
        .map(|f| (format!("hyp_dist/{}", f.name), Spec(f.name.clone())))
        .collect()
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

/// d in f64 (oracle) and f32 (distance rule against f64 on the same rounded inputs).
pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    let fx = m.case(&spec.0)?;
    let bad = |message: String| Error::Fixture {
        case: fx.name.clone(),
        message,
    };
    let (x, y) = (m.array::<Ix4>(fx, "x")?, m.array::<Ix4>(fx, "y")?);
    let c = fx.param_f64("c")?;
    let input = fx
        .param_str("input")?
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    let args = HypDistArgs::new(x.view(), y.view(), c, input)?;
    let case = format!("hyp_dist/{}", fx.name);
    let (b, h, n, d) = x.dim();
    let shape = [b, h, n, y.dim().2, d];
    let want = m.array::<Ix4>(fx, "d")?;
    let mut out = Vec::new();
    let f64_site = Site {
        kernel: "hyp_dist",
        backend: B::NAME,
        case: &case,
        shape: &shape,
        dtype: "f64",
    };
    let got = be.hyp_dist(&args, Dtype::F64)?;
    out.extend(tensor(
        &f64_site,
        "d",
        &got.iter().copied().collect::<Vec<_>>(),
        &want.iter().copied().collect::<Vec<_>>(),
        Rule::F64,
    ));
    let f32_site = Site {
        dtype: "f32",
        ..f64_site
    };
    let got32 = be.hyp_dist(&args, Dtype::F32)?;
    let want32 = forward::<f64>(&args, Dtype::F32);
    let s = c.sqrt();
    let worst = got32
        .iter()
        .zip(want32.iter())
        .map(|(g, w)| tol::HYP_DIST_F32.ratio(*g, *w, s))
        .fold(0.0, f64::max);
    out.push(f32_site.record("d_err_over_rule", worst, "", Some(Target::AtMost(1.0))));
    // Where the oracle says 0 (coincident points), both precisions must give exactly 0.
    let zeros = want
        .iter()
        .zip(got.iter().zip(got32.iter()))
        .filter(|(w, (a, b))| **w == 0.0 && (**a != 0.0 || **b != 0.0))
        .count();
    out.push(f64_site.record(
        "coincident_pairs_not_exactly_zero",
        zeros as f64,
        "",
        Some(Target::AtMost(0.0)),
    ));
    Ok(out)
}
