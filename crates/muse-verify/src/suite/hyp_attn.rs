//! The hyperbolic-attention family of the suite: golden fixtures (`fixtures/hyperbolic/`,
//! gen.py: float64/mpmath ball-form oracle, jax gradients), generated cases at the tensor-core
//! shapes against the CPU f64 reference, and the mask claims (keys a row cannot see leave it
//! bit-identical). Targets: `hyp_checks.rs` (design hyperbolic.md §16).

use muse_reference::hyp_attn::{
    backward, Form, HypAttn, HypAttnArgs, HypAttnGrad, HypAttnOut, Mask,
};
use muse_reference::{Backend, Cpu, Dtype};
use ndarray::{Array4, Ix1, Ix3, Ix4};

use super::hyp_checks::{scalar, tensor, Rule};
use crate::cases::hyp_attn_inputs;
use crate::fixtures::{FixtureCase, Manifest};
use crate::report::Site;
use crate::tolerance::tol;
use crate::{Error, Record, Target};

/// Generated inputs checked against the CPU f64 reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synthetic {
    /// (B, H, N, M, D, Dv).
    pub dims: (usize, usize, usize, usize, usize, usize),
    /// The mask.
    pub mask: Mask,
    /// Per-batch key lengths (first two batches), if any.
    pub lengths: Option<[usize; 2]>,
    /// Curvature.
    pub c: f64,
    /// β.
    pub beta: f64,
    /// Also check the gradient.
    pub grad: bool,
}

impl Synthetic {
    /// Case id, e.g. `gen/causal_b2h2_n300_m300_d64_dv64`.
    pub fn name(&self) -> String {
        let (b, h, n, m, d, dv) = self.dims;
        let mask = self.mask.name().replace(':', "");
        let len = if self.lengths.is_some() {
            "_lengths"
        } else {
            ""
        };
        format!("gen/{mask}_b{b}h{h}_n{n}_m{m}_d{d}_dv{dv}{len}")
    }
}

/// What a hyperbolic-attention case runs.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Forward (and gradient where the fixture has one) against a golden fixture.
    Fixture(String),
    /// Forward and gradient on generated inputs against the CPU f64 reference.
    Synthetic(Synthetic),
    /// Perturbing keys a row cannot see leaves its output bit-identical.
    Masks(Mask),
}

/// Generated shapes: the tensor-core shapes (D = Dv = 64 and 128) for every mask, decode with
/// lengths, and odd dims on the SIMT path.
pub fn synthetic_cases() -> Vec<Synthetic> {
    let s = |dims, mask, lengths, c, beta, grad| Synthetic {
        dims,
        mask,
        lengths,
        c,
        beta,
        grad,
    };
    vec![
        s(
            (2, 2, 300, 300, 64, 64),
            Mask::Causal,
            None,
            0.693,
            0.693,
            true,
        ),
        s((1, 2, 200, 333, 128, 128), Mask::None, None, 2.0, 1.3, true),
        s(
            (4, 2, 256, 256, 64, 64),
            Mask::Window(64),
            None,
            0.693,
            0.693,
            true,
        ),
        s(
            (2, 2, 3, 1000, 64, 64),
            Mask::Causal,
            Some([1000, 517]),
            0.693,
            1.0,
            true,
        ),
        s(
            (1, 1, 130, 130, 200, 72),
            Mask::Causal,
            None,
            0.01,
            2.0,
            true,
        ),
    ]
}

/// The family's cases: fixtures, generated cases, mask claims.
pub fn cases(manifest: &Manifest) -> Vec<(String, Spec)> {
    let fixtures = manifest
        .family("hyp_attn")
        .map(|fx| (fx.name.clone(), Spec::Fixture(fx.name.clone())));
    let synthetic = synthetic_cases()
        .into_iter()
        .map(|s| (s.name(), Spec::Synthetic(s)));
    let masks = [Mask::Causal, Mask::Window(16)].into_iter().map(|m| {
        (
            format!("mask/{}", m.name().replace(':', "")),
            Spec::Masks(m),
        )
    });
    fixtures.chain(synthetic).chain(masks).collect()
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

/// Runs one case on `be`.
pub fn run<B: Backend>(be: &B, spec: &Spec, manifest: &Manifest) -> crate::Result<Vec<Record>> {
    match spec {
        Spec::Fixture(name) => fixture(be, manifest, manifest.case(name)?),
        Spec::Synthetic(s) => synthetic(be, s),
        Spec::Masks(m) => masks(be, *m),
    }
}

fn shape(args: &HypAttnArgs<'_>) -> Vec<usize> {
    let (b, h, n, m, d, dv) = args.dims();
    vec![b, h, n, m, d, dv]
}

fn flat<D: ndarray::Dimension>(x: &ndarray::Array<f64, D>) -> Vec<f64> {
    x.iter().copied().collect()
}

fn max_abs(x: &Array4<f64>) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// √c·max‖q‖ and √c·max‖k‖ above which the original's flash ball form collapses in f32
/// (design §2.3 table: 18 % error at a = 5), so its f32 rows are reported, not gated.
const FLASH_F32_MAX_NORM: f64 = 5.0;

fn max_tangent_norm(args: &HypAttnArgs<'_>) -> f64 {
    let row_max = |x: ndarray::ArrayView4<'_, f64>| {
        x.lanes(ndarray::Axis(3))
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .fold(0.0, f64::max)
    };
    args.curvature().s() * row_max(args.q()).max(row_max(args.k()))
}

fn forward_records(
    site: &Site<'_>,
    dtype: Dtype,
    got: &HypAttnOut,
    want: &HypAttnOut,
    max_v: f64,
    documented_failure: bool,
) -> Vec<Record> {
    let (o, lse) = match dtype {
        Dtype::F64 => (Rule::F64, Rule::F64),
        _ if documented_failure => (Rule::Report, Rule::Report),
        Dtype::F32 => (Rule::F32, Rule::F32Lse),
        Dtype::Bf16 => (Rule::Bf16 { scale: max_v }, Rule::F32Lse),
    };
    let mut out = tensor(site, "o", &flat(&got.o), &flat(&want.o), o);
    out.extend(tensor(site, "lse", &flat(&got.lse), &flat(&want.lse), lse));
    out
}

fn grad_records(
    site: &Site<'_>,
    dtype: Dtype,
    got: &HypAttnGrad,
    want: &HypAttnGrad,
    (sc, sb): (f64, f64),
) -> Vec<Record> {
    let (rule, sbound) = match dtype {
        Dtype::F64 => (Rule::F64Grad, tol::HYP_F64_REL),
        Dtype::Bf16 => (
            Rule::Grad {
                bound: tol::HYP_ATTN_GRAD_BF16,
            },
            tol::HYP_ATTN_SCALAR_BF16,
        ),
        _ => (
            Rule::Grad {
                bound: tol::HYP_ATTN_GRAD_F32,
            },
            tol::HYP_ATTN_SCALAR_F32,
        ),
    };
    let mut out = Vec::new();
    for (name, g, w) in [
        ("dq", &got.dq, &want.dq),
        ("dk", &got.dk, &want.dk),
        ("dv", &got.dv, &want.dv),
    ] {
        out.extend(tensor(site, name, &flat(g), &flat(w), rule));
    }
    out.push(scalar(site, "dc", got.dc, want.dc, sc, sbound));
    out.push(scalar(site, "dbeta", got.dbeta, want.dbeta, sb, sbound));
    out
}

/// The case's checks for `dtypes`: forward always, gradient where `want_grad` is given.
fn check<B: Backend>(
    be: &B,
    case: &str,
    args: &HypAttnArgs<'_>,
    want: &HypAttnOut,
    want_grad: Option<(&Array4<f64>, &HypAttnGrad)>,
) -> crate::Result<Vec<Record>> {
    let shape = shape(args);
    let max_v = max_abs(&args.v().to_owned());
    let dtypes: &[Dtype] = if args.form() == Form::Exact {
        &Dtype::ALL
    } else {
        &[Dtype::F64, Dtype::F32]
    };
    let mut out = Vec::new();
    for &dtype in dtypes {
        let site = Site {
            kernel: "hyp_attn_fwd",
            backend: B::NAME,
            case,
            shape: &shape,
            dtype: dtype.name(),
        };
        let got = be.hyp_attn(args, dtype)?;
        let rounded;
        let want = if dtype == Dtype::Bf16 {
            // bf16 is judged against f64 on the same rounded inputs (design §16).
            let (q, k, v) = (round(args.q()), round(args.k()), round(args.v()));
            let a = rebuild(args, q.view(), k.view(), v.view())?;
            rounded = Cpu.hyp_attn(&a, Dtype::F64)?;
            &rounded
        } else {
            want
        };
        let documented = args.form() == Form::Flash && max_tangent_norm(args) > FLASH_F32_MAX_NORM;
        out.extend(forward_records(&site, dtype, &got, want, max_v, documented));
        if let Some((d_o, wg)) = want_grad {
            let site = Site {
                kernel: "hyp_attn_bwd",
                ..site
            };
            let g = be.hyp_attn_grad(args, d_o.view(), dtype)?;
            if dtype == Dtype::Bf16 {
                // Against f64 on the same bf16-rounded inputs and upstream gradient.
                let (q, k, v, dr) = (
                    round(args.q()),
                    round(args.k()),
                    round(args.v()),
                    round(d_o.view()),
                );
                let a = rebuild(args, q.view(), k.view(), v.view())?;
                let w = Cpu.hyp_attn_grad(&a, dr.view(), Dtype::F64)?;
                let scales = backward::scalar_scales(&a, dr.view());
                out.extend(grad_records(&site, dtype, &g, &w, scales));
            } else {
                let scales = backward::scalar_scales(args, d_o.view());
                out.extend(grad_records(&site, dtype, &g, wg, scales));
            }
        }
    }
    Ok(out)
}

fn round(x: ndarray::ArrayView4<'_, f64>) -> Array4<f64> {
    x.mapv(|v| Dtype::Bf16.round(v))
}

fn rebuild<'a>(
    args: &HypAttnArgs<'_>,
    q: ndarray::ArrayView4<'a, f64>,
    k: ndarray::ArrayView4<'a, f64>,
    v: ndarray::ArrayView4<'a, f64>,
) -> crate::Result<HypAttnArgs<'a>> {
    let a = HypAttnArgs::new(q, k, v, args.curvature().c(), args.beta(), args.mask())?
        .with_form(args.form());
    Ok(match args.lengths() {
        Some(l) => a.with_lengths(l.to_vec())?,
        None => a,
    })
}

fn fixture<B: Backend>(be: &B, m: &Manifest, fx: &FixtureCase) -> crate::Result<Vec<Record>> {
    let bad = |message: String| Error::Fixture {
        case: fx.name.clone(),
        message,
    };
    let (q, k, v) = (
        m.array::<Ix4>(fx, "q")?,
        m.array::<Ix4>(fx, "k")?,
        m.array::<Ix4>(fx, "v")?,
    );
    let mask: Mask = fx.param_str("mask")?.parse().map_err(bad)?;
    let form: Form = fx.param_str("form")?.parse().map_err(bad)?;
    let mut args = HypAttnArgs::new(
        q.view(),
        k.view(),
        v.view(),
        fx.param_f64("c")?,
        fx.param_f64("beta")?,
        mask,
    )?
    .with_form(form);
    if fx.has("lengths") {
        let l = m.array::<Ix1>(fx, "lengths")?;
        args = args.with_lengths(l.iter().map(|&x| x as usize).collect())?;
    }
    let want = HypAttnOut {
        o: m.array::<Ix4>(fx, "o")?,
        lse: m.array::<Ix3>(fx, "lse")?,
    };
    let grad = if fx.param_bool("has_grad") {
        let scalar1 = |stem: &str| -> crate::Result<f64> { Ok(m.array::<Ix1>(fx, stem)?[0]) };
        Some((
            m.array::<Ix4>(fx, "d_o")?,
            HypAttnGrad {
                dq: m.array::<Ix4>(fx, "dq")?,
                dk: m.array::<Ix4>(fx, "dk")?,
                dv: m.array::<Ix4>(fx, "dv")?,
                dc: scalar1("dc")?,
                dbeta: scalar1("dbeta")?,
            },
        ))
    } else {
        None
    };
    check(
        be,
        &fx.name,
        &args,
        &want,
        grad.as_ref().map(|(d, g)| (d, g)),
    )
}

fn synthetic<B: Backend>(be: &B, s: &Synthetic) -> crate::Result<Vec<Record>> {
    let (b, h, n, m, d, dv) = s.dims;
    let (q, k, v, d_o) = hyp_attn_inputs((b, h, n, m, d, dv), s.c, 7);
    let mut args = HypAttnArgs::new(q.view(), k.view(), v.view(), s.c, s.beta, s.mask)?;
    if let Some(l) = s.lengths {
        args = args.with_lengths((0..b).map(|i| l[i.min(1)]).collect())?;
    }
    let want = Cpu.hyp_attn(&args, Dtype::F64)?;
    let grad = s
        .grad
        .then(|| Cpu.hyp_attn_grad(&args, d_o.view(), Dtype::F64))
        .transpose()?;
    check(
        be,
        &s.name(),
        &args,
        &want,
        grad.as_ref().map(|g| (&d_o, g)),
    )
}

/// Perturbs key/value 37 of a (1, 2, 80, 80, 16, 8) problem and counts rows whose output moved
/// although they cannot see that key (target 0), and rows that see it but did not move (target 0).
fn masks<B: Backend>(be: &B, mask: Mask) -> crate::Result<Vec<Record>> {
    let (q, k, v, _) = hyp_attn_inputs((1, 2, 80, 80, 16, 8), 0.693, 11);
    let case = format!("mask/{}", mask.name().replace(':', ""));
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let before = be.hyp_attn(
            &HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.0, mask)?,
            dtype,
        )?;
        let (mut k2, mut v2) = (k.clone(), v.clone());
        k2.index_axis_mut(ndarray::Axis(2), 37)
            .mapv_inplace(|x| x + 0.5);
        v2.index_axis_mut(ndarray::Axis(2), 37)
            .mapv_inplace(|x| x - 3.0);
        let args = HypAttnArgs::new(q.view(), k2.view(), v2.view(), 0.693, 1.0, mask)?;
        let after = be.hyp_attn(&args, dtype)?;
        let (mut leaked, mut missed) = (0usize, 0usize);
        for h in 0..2 {
            for i in 0..80 {
                let (lo, hi) = args.visible(0, i);
                let moved = (0..8)
                    .any(|e| before.o[[0, h, i, e]].to_bits() != after.o[[0, h, i, e]].to_bits());
                match ((lo..hi).contains(&37), moved) {
                    (false, true) => leaked += 1,
                    (true, false) => missed += 1,
                    _ => {}
                }
            }
        }
        let site = Site {
            kernel: "hyp_attn_fwd",
            backend: B::NAME,
            case: &case,
            shape: &[1, 2, 80, 80, 16, 8],
            dtype: dtype.name(),
        };
        out.push(site.record(
            "rows_moved_by_invisible_key",
            leaked as f64,
            "",
            Some(Target::AtMost(0.0)),
        ));
        out.push(site.record(
            "rows_unmoved_by_visible_key",
            missed as f64,
            "",
            Some(Target::AtMost(0.0)),
        ));
    }
    Ok(out)
}
