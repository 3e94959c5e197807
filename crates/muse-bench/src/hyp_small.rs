//! Shared pieces of the small hyperbolic families' benches (`hyp_ln`, `lin_attn`, `hyp_dist`):
//! seeded inputs and the CPU timing of one call.

use muse_verify::report::Site;
use ndarray::{Array, Dimension, ShapeBuilder};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::records::cpu_timing;
use crate::timing::time;
use crate::{CpuCtx, Result};

/// N(0, 1)·`scale` of `shape`, from `seed`.
pub fn randn<D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    scale: f64,
    seed: u64,
) -> Array<f64, D> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || {
        let x: f64 = StandardNormal.sample(&mut rng);
        x * scale
    })
}

/// Times `work` on the CPU within the budget and records it at `site`.
pub fn cpu_time(
    ctx: &mut CpuCtx<'_>,
    site: &Site<'_>,
    mut work: impl FnMut() -> muse_reference::Result<()>,
) -> Result<()> {
    work()?;
    let t = time(ctx.budget, &mut work);
    ctx.report.records.extend(cpu_timing(site, &t, None));
    Ok(())
}
