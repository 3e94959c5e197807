//! Properties of the Poincaré core (design §16): closed forms, identities, the three distance
//! forms against each other, and every VJP against central finite differences (f64).

use super::grad::{dist_tangent_vjp, exp0_vjp, log0_vjp};
use super::maps::{
    dist0, dist_ball, dist_mobius, dist_tangent, exp0, expx, log0, logx, mobius_add, projx,
};
use super::scalar::norm;
use proptest::prelude::*;

const CASES: u32 = 1000;

/// A tangent vector of dimension `d` with s‖u‖ = `t` along a random direction.
fn tangent(dir: &[f64], s: f64, t: f64) -> Vec<f64> {
    let n = norm(dir).max(1e-300);
    dir.iter().map(|&e| e / n * t / s).collect()
}

fn vecs(d: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1.0f64..1.0, d)
}

fn setup() -> impl Strategy<Value = (f64, Vec<f64>, Vec<f64>, f64, f64)> {
    (
        1usize..=12,
        prop::sample::select(vec![0.01, 0.693, 1.0, 2.0, 10.0]),
    )
        .prop_flat_map(|(d, c)| (Just(c), vecs(d), vecs(d), 0.0f64..6.0, 0.0f64..6.0))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn distance_forms_agree_and_are_symmetric((c, du, dw, tu, tw) in setup()) {
        let s = c.sqrt();
        let (u, w) = (tangent(&du, s, tu.min(3.0)), tangent(&dw, s, tw.min(3.0)));
        let (mut x, mut y) = (vec![0.0; u.len()], vec![0.0; u.len()]);
        exp0(s, &u, &mut x);
        exp0(s, &w, &mut y);
        let lc = dist_tangent(s, &u, &w);
        prop_assert!(rel(lc, dist_ball(c, &x, &y)) < 1e-9, "law of cosines vs ball");
        prop_assert!(rel(dist_mobius(c, &x, &y), dist_ball(c, &x, &y)) < 1e-9, "mobius vs ball");
        prop_assert_eq!(lc, dist_tangent(s, &w, &u));
        prop_assert!(lc >= 0.0);
    }

    #[test]
    fn self_distance_is_exactly_zero((c, du, _dw, tu, _tw) in setup()) {
        let s = c.sqrt();
        let u = tangent(&du, s, tu * 2.0);
        let mut x = vec![0.0; u.len()];
        exp0(s, &u, &mut x);
        prop_assert_eq!(dist_tangent(s, &u, &u), 0.0);
        prop_assert_eq!(dist_ball(c, &x, &x), 0.0);
        let u32: Vec<f32> = u.iter().map(|&e| e as f32).collect();
        prop_assert_eq!(dist_tangent(s as f32, &u32, &u32), 0.0);
    }

    #[test]
    fn triangle_inequality((c, du, dw, tu, tw) in setup(), dv in vecs(12), tv in 0.0f64..3.0) {
        let s = c.sqrt();
        let d = du.len();
        let (u, w, v) = (tangent(&du, s, tu.min(3.0)), tangent(&dw, s, tw.min(3.0)), tangent(&dv[..d], s, tv));
        let (uw, uv, vw) = (dist_tangent(s, &u, &w), dist_tangent(s, &u, &v), dist_tangent(s, &v, &w));
        prop_assert!(uw <= uv + vw + 1e-9 * (1.0 + uw));
    }

    #[test]
    fn exp0_log0_round_trip_and_origin_distance((c, du, _dw, tu, _tw) in setup()) {
        let s = c.sqrt();
        let u = tangent(&du, s, tu.min(5.0));
        let (mut x, mut back) = (vec![0.0; u.len()], vec![0.0; u.len()]);
        exp0(s, &u, &mut x);
        prop_assert!(s * norm(&x) < 1.0);
        log0(s, &x, &mut back);
        for (a, b) in back.iter().zip(&u) {
            prop_assert!((a - b).abs() <= 1e-7 * (1.0 + b.abs()) / s.min(1.0), "log0(exp0 u) = u");
        }
        prop_assert!(rel(dist0(s, &x), 2.0 * norm(&u)) < 1e-8, "d(0, exp0 v) = 2|v|");
        prop_assert!(rel(dist_tangent(s, &vec![0.0; u.len()], &u), 2.0 * norm(&u)) < 1e-12);
    }

    #[test]
    fn mobius_identities((c, du, dw, tu, tw) in setup()) {
        let s = c.sqrt();
        let (u, w) = (tangent(&du, s, tu.min(3.0)), tangent(&dw, s, tw.min(3.0)));
        let n = u.len();
        let (mut x, mut y, mut xy, mut back) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        exp0(s, &u, &mut x);
        exp0(s, &w, &mut y);
        mobius_add(c, &x, &vec![0.0; n], &mut back);
        prop_assert_eq!(&back, &x);
        mobius_add(c, &x, &y, &mut xy);
        let neg: Vec<f64> = x.iter().map(|e| -e).collect();
        mobius_add(c, &neg, &xy, &mut back);
        for (a, b) in back.iter().zip(&y) {
            prop_assert!((a - b).abs() <= 1e-9 / s, "(-x) + (x + y) = y");
        }
        // exp_x and log_x are inverse, and log_x(y) has length d(x, y)/λ_x·... : check d(x, exp_x v).
        logx(c, &x, &y, &mut back);
        let mut again = vec![0.0; n];
        expx(c, &x, &back, &mut again);
        for (a, b) in again.iter().zip(&y) {
            prop_assert!((a - b).abs() <= 1e-8 / s, "exp_x(log_x y) = y");
        }
    }

    #[test]
    fn projx_lands_inside((c, du, _dw, tu, _tw) in setup()) {
        let s = c.sqrt();
        let p = tangent(&du, s, tu);
        let mut x = vec![0.0; p.len()];
        projx(s, 1e-5, &p, &mut x);
        prop_assert!(s * norm(&x) <= 1.0 - 1e-5 + 1e-12);
        if s * norm(&p) < 1.0 - 1e-5 { prop_assert_eq!(&x, &p); }
    }

    #[test]
    fn vjps_match_central_differences((c, du, dw, tu, tw) in setup(), g in vecs(12), delta in -2.0f64..2.0) {
        let s = c.sqrt();
        let (u, w) = (tangent(&du, s, 0.05 + tu.min(4.0)), tangent(&dw, s, 0.05 + tw.min(4.0)));
        let n = u.len();
        let g = &g[..n];
        let h = 1e-6;
        // exp0: d/du_k Σ g·exp0(u)
        let mut got = vec![0.0; n];
        exp0_vjp(s, &u, g, &mut got);
        let f = |v: &[f64]| { let mut o = vec![0.0; n]; exp0(s, v, &mut o); o.iter().zip(g).map(|(a, b)| a * b).sum::<f64>() };
        check_fd("exp0_vjp", &u, &got, f, h)?;
        // log0 at x = exp0(w)
        let mut x = vec![0.0; n];
        exp0(s, &w, &mut x);
        log0_vjp(s, &x, g, &mut got);
        let f = |v: &[f64]| { let mut o = vec![0.0; n]; log0(s, v, &mut o); o.iter().zip(g).map(|(a, b)| a * b).sum::<f64>() };
        check_fd("log0_vjp", &x, &got, f, h * 1e-2 / s.max(1.0))?;
        // law of cosines: u, w and c
        let (mut gu, mut gw) = (vec![0.0; n], vec![0.0; n]);
        let ds = dist_tangent_vjp(s, &u, &w, delta, &mut gu, &mut gw);
        check_fd("dist_du", &u, &gu, |v: &[f64]| delta * dist_tangent(s, v, &w), h)?;
        check_fd("dist_dw", &w, &gw, |v: &[f64]| delta * dist_tangent(s, &u, v), h)?;
        let fc = |cc: f64| delta * dist_tangent(cc.sqrt(), &u, &w);
        let hc = 1e-5 * c;
        let fd_c = (fc(c + hc) - fc(c - hc)) / (2.0 * hc);
        let dc = ds / (2.0 * s);
        prop_assert!((dc - fd_c).abs() <= 1e-6 * (1.0 + fd_c.abs()), "dc {} vs fd {}", dc, fd_c);
    }
}

fn check_fd(
    what: &str,
    at: &[f64],
    got: &[f64],
    f: impl Fn(&[f64]) -> f64,
    h: f64,
) -> Result<(), TestCaseError> {
    let scale = got.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for k in 0..at.len() {
        let (mut p, mut m) = (at.to_vec(), at.to_vec());
        p[k] += h;
        m[k] -= h;
        let fd = (f(&p) - f(&m)) / (2.0 * h);
        prop_assert!(
            (got[k] - fd).abs() <= 1e-5 * scale,
            "{what}[{k}]: analytic {} vs central difference {}",
            got[k],
            fd
        );
    }
    Ok(())
}

#[test]
fn the_zero_vector_gradient_is_the_limit() {
    // d(exp0 u, exp0 w) at u = 0 is 2|w| - 2<u, ŵ> + O(|u|²): the gradient in u is -2ŵ.
    let (s, w) = (1.3_f64, [0.3, -0.4, 1.2]);
    let (mut gu, mut gw) = ([0.0; 3], [0.0; 3]);
    dist_tangent_vjp(s, &[0.0; 3], &w, 1.0, &mut gu, &mut gw);
    let n = norm(&w);
    for k in 0..3 {
        assert!((gu[k] + 2.0 * w[k] / n).abs() < 1e-12, "{gu:?}");
        assert!((gw[k] - 2.0 * w[k] / n).abs() < 1e-12, "{gw:?}");
    }
}

#[test]
fn f32_exp0_stays_inside_the_ball_at_large_norms() {
    for t in [5.0_f32, 9.0, 11.0, 15.0, 40.0] {
        let s = 0.5_f32;
        let v = [t / s / 2.0_f32.sqrt(), t / s / 2.0_f32.sqrt()];
        let mut x = [0.0_f32; 2];
        exp0(s, &v, &mut x);
        let r = f64::from(s) * (f64::from(x[0]).powi(2) + f64::from(x[1]).powi(2)).sqrt();
        assert!(r < 1.0 && r > 0.9999, "s|exp0 v| = {r} at t = {t}");
    }
}

#[test]
fn check_nonempty_names_the_first_size_0_dimension() {
    use super::check_nonempty;
    assert!(check_nonempty("op", "q", &["B", "H", "N", "D"], &[1, 2, 3, 4]).is_ok());
    let e = check_nonempty("op", "q", &["B", "H", "N", "D"], &[1, 0, 0, 4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "op: H must be at least 1 (`q` has shape [1, 0, 0, 4])"
    );
}
