//! Helpers of the hyperbolic families' tests (`hyp_ln`, `lin_attn`, `hyp_dist`): seeded inputs,
//! element and tensor assertions on real arrays that print the worst element and the headroom,
//! and the fixture lookup.
#![allow(dead_code)]

use muse::verify::fixtures::{FixtureCase, Manifest};
use muse::verify::stats::Verdict;
use muse::verify::tolerance::{tol, DistTolerance};
use muse::verify::{ErrorStats, Tolerance};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// `len` standard normal values times `scale`, from `seed`.
pub fn randn(len: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut rng);
            scale * v
        })
        .collect::<Vec<f64>>()
}

/// Element rule: every element within `tol`; prints the worst element as a multiple of what is
/// allowed.
pub fn assert_tol(
    what: &str,
    got: &[f64],
    want: &[f64],
    tol: Tolerance,
) -> anyhow::Result<ErrorStats> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{what}: {} vs {} elements",
        got.len(),
        want.len()
    );
    let v = Verdict::real(got, want, tol);
    let stats = ErrorStats::real(got, want);
    anyhow::ensure!(
        v.passed(),
        "{what}: {}/{} outside ({tol}); worst flat [{}]: got {} want {}, {:.3}x allowed; max_abs {:.3e}",
        v.outside,
        v.count,
        v.worst_index,
        v.worst.0.re,
        v.worst.1.re,
        v.worst_ratio,
        stats.max_abs
    );
    Ok(stats)
}

/// The project's tensor rule: MSE < `tol::MSE_MAX` against the f64 truth.
pub fn assert_mse(what: &str, got: &[f64], want: &[f64]) -> anyhow::Result<()> {
    let s = ErrorStats::real(got, want);
    anyhow::ensure!(
        s.nonfinite_mismatch == 0 && s.mse < tol::MSE_MAX,
        "{what}: MSE {:.3e} (limit {:e}), {} non-finite mismatches",
        s.mse,
        tol::MSE_MAX,
        s.nonfinite_mismatch
    );
    Ok(())
}

/// Scaled rule: `max|got − want| ≤ rel · max(floor, max|want|)`.
pub fn assert_scaled(
    what: &str,
    got: &[f64],
    want: &[f64],
    rel: f64,
    floor: f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{what}: {} vs {} elements",
        got.len(),
        want.len()
    );
    let scale = want
        .iter()
        .fold(floor, |m, x| m.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    let s = ErrorStats::real(got, want);
    anyhow::ensure!(
        s.nonfinite_mismatch == 0 && s.max_abs <= rel * scale,
        "{what}: max |Δ| = {:.3e} at flat {} (got {} want {}) exceeds {rel:e} · {scale:.3e} ({:.2}x allowed)",
        s.max_abs,
        s.argmax,
        got.get(s.argmax).copied().unwrap_or(f64::NAN),
        want.get(s.argmax).copied().unwrap_or(f64::NAN),
        s.max_abs / (rel * scale)
    );
    Ok(())
}

/// The distance rule of design §16 at √c = `s`.
pub fn assert_dist(
    what: &str,
    got: &[f64],
    want: &[f64],
    s: f64,
    tol: DistTolerance,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{what}: {} vs {} elements",
        got.len(),
        want.len()
    );
    let (mut outside, mut worst, mut at) = (0usize, 0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = tol.ratio(g, w, s);
        if r > 1.0 {
            outside += 1;
        }
        if r > worst || i == 0 {
            (worst, at) = (r, i);
        }
    }
    anyhow::ensure!(
        outside == 0,
        "{what}: {outside}/{} outside ({tol}, sqrt(c) = {s}); worst flat [{at}]: got {} want {}, {worst:.3}x allowed",
        got.len(),
        got[at],
        want[at]
    );
    Ok(())
}

/// The fixture case `name` of `family`, with the manifest to load its arrays.
pub fn fixture(family: &str, name: &str) -> anyhow::Result<(Manifest, FixtureCase)> {
    let m = Manifest::discover()?;
    let case = m
        .family(family)
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "fixture {family}/{name} is not in {}/manifest.json",
                m.root.display()
            )
        })?;
    Ok((m, case))
}

/// A fixture array as a flat vector (any rank; a 0-d array gives one value).
pub fn fixture_flat(m: &Manifest, case: &FixtureCase, stem: &str) -> anyhow::Result<Vec<f64>> {
    Ok(m.array::<ndarray::IxDyn>(case, stem)?
        .iter()
        .copied()
        .collect())
}
