//! `muse bench --backend cuda` in a build without the `cuda` feature.

use crate::Outcome;

/// Fails with the reason: CUDA is not compiled in.
pub fn run(_: &super::bench::Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("{}", muse_cuda::NOT_COMPILED)
}
