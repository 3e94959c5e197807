//! What the CLI test files share: running the built `muse` binary and reading its stderr.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `muse` binary with `args` in `dir`.
pub fn muse(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muse"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs")
}

/// The run's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
