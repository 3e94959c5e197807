//! One module per subcommand; each exposes `Args` and `run(Args) -> anyhow::Result<Outcome>`.

pub mod attention;
pub mod bench;
pub mod bk_core;
pub mod eval;
pub mod gate;
pub mod model;
pub mod report;
pub mod train;
pub mod verify;

/// A known fix for an error, printed after it as `hint: …`.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{e:#}");
    if text.contains("without the `cuda` feature") {
        Some("build with `--features cuda` (bash ci/cuda-setup.sh first) and run on a GPU machine, or use `--backend cpu`")
    } else if text.contains("fixtures/manifest.json") {
        Some("run from the repository root, or point MUSE_FIXTURES at the fixtures folder")
    } else if text.contains("T - zI is singular") {
        Some("try `--z-im 0.1`")
    } else if text.contains("hyp_attn:") && text.contains("must have shape") {
        Some("q is (B, H, N, D), k is (B, H, M, D), v is (B, H, M, Dv)")
    } else if text.contains("must have shape") {
        Some("a is (B, N); b and c are (B, N-1)")
    } else {
        None
    }
}
