//! The hyperbolic families against the golden fixtures of the independent numpy/mpmath oracle
//! (`fixtures/hyperbolic/`, looked up by family and case name in `fixtures/manifest.json`): the
//! f64 path on every backend within `tol::HYP_ORACLE_F64` (design hyperbolic.md §16).

use muse::reference::hyp_dist::HypDistArgs;
use muse::reference::hyp_ln::{HypLnArgs, HypLnConfig};
use muse::reference::lin_attn::{LinAttnArgs, LinAttnConfig};
use muse::reference::Dtype;
use muse::verify::tolerance::tol;
use muse::Backend;
use ndarray::{Ix1, Ix2, Ix4};

use crate::common::{registered_case_passes, test_backends};
use crate::hyp_common::{assert_dist, assert_tol, fixture, fixture_flat};

fn flat<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// A `hyp_ln` case: y, out, dx, dγ, dβ_ln and dc in f64; the f32 image stays in the ball.
fn hyp_ln_matches_fixture<B: Backend>(be: &B, name: &str) -> anyhow::Result<()> {
    let (m, case) = fixture("hyp_ln", name)?;
    let x = m.array::<Ix2>(&case, "x")?;
    let (gamma, beta) = (
        m.array::<Ix1>(&case, "gamma")?,
        m.array::<Ix1>(&case, "beta_ln")?,
    );
    let g = m.array::<Ix2>(&case, "g")?;
    let cfg = HypLnConfig::new(case.param_f64("c")?)
        .eps(case.param_f64("eps")?)
        .mode(case.param_str("mode")?.parse()?);
    let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), cfg)?;
    let t = tol::HYP_ORACLE_F64;
    let got = be.hyp_ln(&args, Dtype::F64)?;
    assert_tol(
        &format!("{name} y"),
        &flat(&got.y),
        &fixture_flat(&m, &case, "y")?,
        t,
    )?;
    assert_tol(
        &format!("{name} out"),
        &flat(&got.out),
        &fixture_flat(&m, &case, "out")?,
        t,
    )?;
    let grad = be.hyp_ln_grad(&args, g.view(), Dtype::F64)?;
    assert_tol(
        &format!("{name} dx"),
        &flat(&grad.dx),
        &fixture_flat(&m, &case, "dx")?,
        t,
    )?;
    let dg = fixture_flat(&m, &case, "dgamma")?;
    assert_tol(&format!("{name} dgamma"), &flat(&grad.dgamma), &dg, t)?;
    let db = fixture_flat(&m, &case, "dbeta_ln")?;
    assert_tol(&format!("{name} dbeta_ln"), &flat(&grad.dbeta_ln), &db, t)?;
    assert_tol(
        &format!("{name} dc"),
        &[grad.dc],
        &fixture_flat(&m, &case, "dc")?,
        t,
    )?;
    let s = cfg.c.sqrt();
    for o in be.hyp_ln(&args, Dtype::F32)?.out.rows() {
        anyhow::ensure!(
            s * o.dot(&o).sqrt() < 1.0,
            "{name}: an f32 image left the ball"
        );
    }
    Ok(())
}
test_backends! {
    #[case::exp0_r7_d256("exp0_r7_d256")]
    #[case::exp0_r128_d64_saturated("exp0_r128_d64_saturated")]
    #[case::exp0_r5_d1("exp0_r5_d1")]
    #[case::clip_r16_d256("clip_r16_d256")]
    fn hyp_ln_matches_fixture(name: &str);
}

/// A `hyp_dist` case: d in f64 within the oracle tolerance, f32 within the §16 distance rule.
fn hyp_dist_matches_fixture<B: Backend>(be: &B, name: &str) -> anyhow::Result<()> {
    let (m, case) = fixture("hyp_dist", name)?;
    let (x, y) = (m.array::<Ix4>(&case, "x")?, m.array::<Ix4>(&case, "y")?);
    let c = case.param_f64("c")?;
    let args = HypDistArgs::new(x.view(), y.view(), c, case.param_str("input")?.parse()?)?;
    let want = fixture_flat(&m, &case, "d")?;
    let got = be.hyp_dist(&args, Dtype::F64)?;
    assert_tol(
        &format!("{name} d f64"),
        &flat(&got),
        &want,
        tol::HYP_ORACLE_F64,
    )?;
    let got32 = be.hyp_dist(&args, Dtype::F32)?;
    let want32 = muse::reference::hyp_dist::forward::<f64>(&args, Dtype::F32);
    assert_dist(
        &format!("{name} d f32"),
        &flat(&got32),
        &flat(&want32),
        c.sqrt(),
        tol::HYP_DIST_F32,
    )
}
test_backends! {
    #[case::tangent_c2_d96("tangent_c2_d96")]
    #[case::ball_c0693_d3("ball_c0.693_d3")]
    #[case::tangent_c001_d256("tangent_c0.01_d256")]
    #[case::ball_c0693_d200("ball_c0.693_d200")]
    #[case::tangent_c0693_d1("tangent_c0.693_d1")]
    fn hyp_dist_matches_fixture(name: &str);
}

/// A `lin_attn` case: o, dq, dk and dv in f64 within the oracle tolerance.
fn lin_attn_matches_fixture<B: Backend>(be: &B, name: &str) -> anyhow::Result<()> {
    let (m, case) = fixture("lin_attn", name)?;
    let [q, k, v, d_o] = ["q", "k", "v", "d_o"].map(|s| m.array::<Ix4>(&case, s));
    let (q, k, v, d_o) = (q?, k?, v?, d_o?);
    let cfg = LinAttnConfig {
        causal: case.param_bool("causal"),
        eps: case.param_f64("eps")?,
    };
    let args = LinAttnArgs::new(q.view(), k.view(), v.view(), cfg)?;
    let t = tol::HYP_ORACLE_F64;
    let o = be.lin_attn(&args, Dtype::F64)?;
    assert_tol(
        &format!("{name} o"),
        &flat(&o),
        &fixture_flat(&m, &case, "o")?,
        t,
    )?;
    let g = be.lin_attn_grad(&args, d_o.view(), Dtype::F64)?;
    assert_tol(
        &format!("{name} dq"),
        &flat(&g.dq),
        &fixture_flat(&m, &case, "dq")?,
        t,
    )?;
    assert_tol(
        &format!("{name} dk"),
        &flat(&g.dk),
        &fixture_flat(&m, &case, "dk")?,
        t,
    )?;
    assert_tol(
        &format!("{name} dv"),
        &flat(&g.dv),
        &fixture_flat(&m, &case, "dv")?,
        t,
    )?;
    Ok(())
}
test_backends! {
    #[case::causal_b2h2_n37_d16_dv24("causal_b2h2_n37_d16_dv24")]
    #[case::causal_n1_d1("causal_n1_d1")]
    #[case::causal_b1h2_n130_d64("causal_b1h2_n130_d64")]
    #[case::noncausal_b1h1_n20_d8("noncausal_b1h1_n20_d8")]
    fn lin_attn_matches_fixture(name: &str);
}

// The same fixtures through the verification suite (the records `muse verify` writes).
test_backends! {
    #[case::hyp_ln_exp0_r7_d256("hyp_ln/exp0_r7_d256")]
    #[case::hyp_ln_exp0_r128_d64_saturated("hyp_ln/exp0_r128_d64_saturated")]
    #[case::hyp_ln_exp0_r5_d1("hyp_ln/exp0_r5_d1")]
    #[case::hyp_ln_clip_r16_d256("hyp_ln/clip_r16_d256")]
    #[case::lin_attn_causal_b2h2_n37_d16_dv24("lin_attn/causal_b2h2_n37_d16_dv24")]
    #[case::lin_attn_causal_n1_d1("lin_attn/causal_n1_d1")]
    #[case::lin_attn_causal_b1h2_n130_d64("lin_attn/causal_b1h2_n130_d64")]
    #[case::lin_attn_noncausal_b1h1_n20_d8("lin_attn/noncausal_b1h1_n20_d8")]
    #[case::hyp_dist_tangent_c2_d96("hyp_dist/tangent_c2_d96")]
    #[case::hyp_dist_ball_c0693_d3("hyp_dist/ball_c0.693_d3")]
    #[case::hyp_dist_tangent_c001_d256("hyp_dist/tangent_c0.01_d256")]
    #[case::hyp_dist_ball_c0693_d200("hyp_dist/ball_c0.693_d200")]
    #[case::hyp_dist_tangent_c0693_d1("hyp_dist/tangent_c0.693_d1")]
    fn registered_case_passes(name: &str);
}
