//! The fused LN + projection against an explicit f64 form written here (two-pass statistics,
//! tanh(√c‖y‖)/(√c‖y‖)·y, the clip as min(1, R/n)), and its backward against central finite
//! differences (design §16: f64 backward vs FD rel ≤ 1e-6).

use ndarray::{Array1, Array2};
use proptest::prelude::*;

use super::{backward, forward, HypLnArgs, HypLnConfig, HypLnMode};
use crate::Dtype;

const CASES: u32 = 1000;
/// Forward f64 vs the explicit form: a few hundred ulps (tol::F64).
const FWD_REL: f64 = 1e-12;
/// f64 backward vs central differences (design §16, tol::HYP_LN_GRAD_FD_F64).
const FD_REL: f64 = 1e-6;

/// The explicit forward of one call: (y, out).
fn explicit(
    x: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    cfg: HypLnConfig,
) -> (Array2<f64>, Array2<f64>) {
    let (rows, dim) = x.dim();
    let (mut y, mut out) = (Array2::zeros((rows, dim)), Array2::zeros((rows, dim)));
    let s = cfg.c.sqrt();
    for r in 0..rows {
        let mu = x.row(r).sum() / dim as f64;
        let var = x.row(r).iter().map(|v| (v - mu).powi(2)).sum::<f64>() / dim as f64;
        for d in 0..dim {
            y[[r, d]] = (x[[r, d]] - mu) / (var + cfg.eps).sqrt() * gamma[d] + beta[d];
        }
        let n2: f64 = y.row(r).iter().map(|v| v * v).sum();
        let factor = match cfg.mode {
            HypLnMode::Exp0 if n2 == 0.0 => 1.0,
            HypLnMode::Exp0 => (s * n2.sqrt()).tanh() / (s * n2.sqrt()),
            HypLnMode::Clip => (((1.0 / s) - 0.01) / (n2 + 1e-8).sqrt()).min(1.0),
        };
        for d in 0..dim {
            out[[r, d]] = factor * y[[r, d]];
        }
    }
    (y, out)
}

type Problem = (
    Array2<f64>,
    Array1<f64>,
    Array1<f64>,
    Array2<f64>,
    HypLnConfig,
);

fn problem() -> impl Strategy<Value = Problem> {
    let mode = prop_oneof![Just(HypLnMode::Exp0), Just(HypLnMode::Clip)];
    let c = prop::sample::select(vec![0.01, 0.3, 0.693, 1.0, 2.0, 10.0]);
    let eps = prop::sample::select(vec![1e-5, 1e-3]);
    (1usize..=4, 1usize..=16, c, eps, mode).prop_flat_map(|(rows, dim, c, eps, mode)| {
        let v = |len, lo: f64, hi: f64| proptest::collection::vec(lo..hi, len);
        (
            v(rows * dim, -3.0, 3.0),
            v(dim, -1.5, 1.5),
            v(dim, -0.5, 0.5),
            v(rows * dim, -1.0, 1.0),
            0.02f64..1.0,
        )
            .prop_map(move |(x, g, b, up, scale)| {
                (
                    Array2::from_shape_vec((rows, dim), x).expect("len"),
                    Array1::from(g).mapv(|e| e * scale),
                    Array1::from(b),
                    Array2::from_shape_vec((rows, dim), up).expect("len"),
                    HypLnConfig::new(c).eps(eps).mode(mode),
                )
            })
    })
}

fn loss(
    x: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    up: &Array2<f64>,
    cfg: HypLnConfig,
) -> f64 {
    let (_, out) = explicit(x, gamma, beta, cfg);
    (&out * up).sum()
}

fn fd_close(what: &str, got: &[f64], fd: &[f64]) -> Result<(), TestCaseError> {
    let scale = fd.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (k, (g, f)) in got.iter().zip(fd).enumerate() {
        prop_assert!(
            (g - f).abs() <= FD_REL * scale,
            "{what}[{k}]: analytic {g} vs central difference {f}"
        );
    }
    Ok(())
}

/// Whether a clip-mode row sits within `margin` of the clip radius (a kink FD cannot see through)
/// or a row's variance is tiny (FD is ill-conditioned there).
fn awkward(
    x: &Array2<f64>,
    gamma: &Array1<f64>,
    beta: &Array1<f64>,
    cfg: HypLnConfig,
    var_min: f64,
) -> bool {
    let (y, _) = explicit(x, gamma, beta, cfg);
    let radius = 1.0 / cfg.c.sqrt() - 0.01;
    y.rows().into_iter().zip(x.rows()).any(|(yr, xr)| {
        let n = (yr.dot(&yr) + 1e-8).sqrt();
        let mu = xr.mean().unwrap_or(0.0);
        let var = xr.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / xr.len() as f64;
        (cfg.mode == HypLnMode::Clip && (n - radius).abs() < 1e-3 * radius)
            || (xr.len() > 1 && var < var_min)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn forward_matches_the_explicit_form((x, gamma, beta, _up, cfg) in problem()) {
        let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg).expect("valid");
        let got = forward::<f64>(&args, Dtype::F64);
        let (y, out) = explicit(&x, &gamma, &beta, cfg);
        for (name, g, w) in [("y", &got.y, &y), ("out", &got.out, &out)] {
            for (a, b) in g.iter().zip(w.iter()) {
                prop_assert!((a - b).abs() <= FWD_REL * b.abs().max(1.0), "{name}: {a} vs {b}");
            }
        }
        let s = cfg.c.sqrt();
        for (r, o) in got.out.rows().into_iter().enumerate() {
            prop_assert!(s * o.dot(&o).sqrt() < 1.0, "row {r} left the ball");
            let want_a = (s * y.row(r).dot(&y.row(r)).sqrt()).min(15.0);
            prop_assert!((got.a[r] - want_a).abs() <= FWD_REL * want_a.max(1.0));
        }
    }

    #[test]
    fn backward_matches_central_differences((x, gamma, beta, up, cfg) in problem()) {
        prop_assume!(!awkward(&x, &gamma, &beta, cfg, 1e-3));
        let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg).expect("valid");
        let got = backward::<f64>(&args, up.view(), Dtype::F64);
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let dx: Vec<f64> = (0..x.len()).map(|k| fd(&|e| {
            let mut xp = x.clone();
            xp.as_slice_mut().expect("standard layout")[k] += e;
            loss(&xp, &gamma, &beta, &up, cfg)
        })).collect();
        fd_close("dx", got.dx.as_slice().expect("standard layout"), &dx)?;
        let dg: Vec<f64> = (0..gamma.len()).map(|k| fd(&|e| {
            let mut gp = gamma.clone();
            gp[k] += e;
            loss(&x, &gp, &beta, &up, cfg)
        })).collect();
        fd_close("dgamma", got.dgamma.as_slice().expect("standard layout"), &dg)?;
        let db: Vec<f64> = (0..beta.len()).map(|k| fd(&|e| {
            let mut bp = beta.clone();
            bp[k] += e;
            loss(&x, &gamma, &bp, &up, cfg)
        })).collect();
        fd_close("dbeta_ln", got.dbeta_ln.as_slice().expect("standard layout"), &db)?;
        let hc = 1e-6 * cfg.c;
        let at = |c: f64| loss(&x, &gamma, &beta, &up, HypLnConfig { c, ..cfg });
        let dc = (at(cfg.c + hc) - at(cfg.c - hc)) / (2.0 * hc);
        prop_assert!((got.dc - dc).abs() <= FD_REL * dc.abs().max(1.0), "dc {} vs fd {}", got.dc, dc);
    }

    #[test]
    fn f32_stays_close_and_inside_the_ball((x, gamma, beta, _up, cfg) in problem()) {
        // LayerNorm amplifies the rounding of x by max|x|/std: keep rows well-conditioned, and
        // compare with f64 on the same f32-rounded inputs.
        prop_assume!(!awkward(&x, &gamma, &beta, cfg, 1e-2));
        let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg).expect("valid");
        let (want, got) = (forward::<f64>(&args, Dtype::F32), forward::<f32>(&args, Dtype::F32));
        for (a, b) in got.out.iter().zip(want.out.iter()) {
            prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "out {a} vs {b}");
        }
        let s = cfg.c.sqrt();
        for o in got.out.rows() {
            prop_assert!(s * o.dot(&o).sqrt() < 1.0);
        }
    }
}

/// γ = 1 at D = 1024 puts every row deep in saturation (t ≈ 32√c): the f32 image must stay
/// strictly inside the ball although tanh rounds to 1 in f32.
#[test]
fn saturated_f32_rows_stay_inside_the_ball() {
    let (rows, dim) = (64, 1024);
    let x = Array2::from_shape_fn((rows, dim), |(r, d)| {
        ((r * 7919 + d * 104_729) % 1000) as f64 / 250.0 - 2.0
    });
    let (gamma, beta) = (Array1::ones(dim), Array1::from_elem(dim, 0.25));
    for c in [0.5, 0.693, 1.0, 10.0] {
        let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(c))
            .expect("valid");
        for dtype in [Dtype::F32, Dtype::Bf16] {
            let got = forward::<f32>(&args, dtype);
            for o in got.out.rows() {
                let r = c.sqrt() * o.dot(&o).sqrt();
                assert!(
                    r < 1.0 && r > 0.999,
                    "sqrt(c)|out| = {r} (c = {c}, {dtype})"
                );
            }
        }
    }
}

/// Clip mode: every row with ‖y‖ above the radius lands exactly on it, the others pass through.
#[test]
fn clip_lands_on_the_radius() {
    let x = Array2::from_shape_fn((3, 5), |(r, d)| (r as f64 + 1.0) * (d as f64 - 2.0));
    let (gamma, beta) = (Array1::from_elem(5, 0.1), Array1::zeros(5));
    let cfg = HypLnConfig::new(4.0).mode(HypLnMode::Clip);
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg).expect("valid");
    let got = forward::<f64>(&args, Dtype::F64);
    for (y, o) in got.y.rows().into_iter().zip(got.out.rows()) {
        assert_eq!(y, o, "‖y‖ = {} is inside R = 0.49", y.dot(&y).sqrt());
    }
    let big = HypLnConfig::new(100.0).mode(HypLnMode::Clip);
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), big).expect("valid");
    for o in forward::<f64>(&args, Dtype::F64).out.rows() {
        assert!((o.dot(&o).sqrt() - 0.09).abs() < 1e-6);
    }
}

#[test]
fn bad_arguments_are_typed_errors_naming_the_argument() {
    let (x, g, b) = (
        Array2::<f64>::ones((2, 3)),
        Array1::<f64>::ones(3),
        Array1::<f64>::zeros(3),
    );
    let msg = |x: &Array2<f64>, g: &Array1<f64>, b: &Array1<f64>, cfg| {
        HypLnArgs::new(x.view(), g.view(), b.view(), cfg)
            .expect_err("rejected")
            .to_string()
    };
    let ok = HypLnConfig::new(1.0);
    assert_eq!(
        msg(
            &Array2::zeros((2, 0)),
            &Array1::zeros(0),
            &Array1::zeros(0),
            ok
        ),
        "hyp_ln: D must be at least 1 (`x` has shape [2, 0])"
    );
    assert_eq!(
        msg(&x, &g, &Array1::zeros(4), ok),
        "hyp_ln: `beta_ln` must have shape [D] = [3], got [4]"
    );
    let mut bad = x.clone();
    bad[[1, 2]] = f64::NAN;
    assert!(msg(&bad, &g, &b, ok).starts_with("hyp_ln: `x` is NaN at [1, 2]"));
    assert!(msg(&x, &g, &b, HypLnConfig::new(0.0))
        .starts_with("hyp_ln: `c` (the curvature) must be finite and > 0"));
    assert!(msg(&x, &g, &b, HypLnConfig::new(2e4).mode(HypLnMode::Clip))
        .starts_with("hyp_ln: `c` must be below 1e4"));
    assert!(msg(&x, &g, &b, ok.eps(0.0)).starts_with("hyp_ln: `eps` must be finite and > 0"));
    let args = HypLnArgs::new(x.view(), g.view(), b.view(), ok).expect("valid");
    let e = args
        .check_grad(&Array2::zeros((3, 3)).view())
        .expect_err("rejected");
    assert_eq!(
        e.to_string(),
        "hyp_ln: `g` must have shape [R, D] = [2, 3] (as `x`), got [3, 3]"
    );
}
