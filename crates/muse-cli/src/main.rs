//! `muse`: verifies every kernel on every available backend, runs the KPI benchmarks and writes
//! the reports. Exit codes: 0 all passed, 1 a check or gate failed, 2 usage or setup error.
#![forbid(unsafe_code)]

mod backends;
mod cmd;
mod npy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Verified O(N) kernels of the ResNet-BK language model: CUDA beside a CPU reference.
#[derive(Parser)]
#[command(name = "muse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every registered case on every available backend; write verification reports.
    Verify(cmd::verify::Args),
    /// Run the KPI benchmarks; write KPI reports with an SVG plot of time against N.
    Bench(cmd::bench::Args),
    /// Compute BK-Core on .npy inputs and write G as .npy.
    BkCore(cmd::bk_core::Args),
    /// Compute hyperbolic attention on .npy inputs and write o and lse as .npy.
    Attention(cmd::attention::Args),
    /// The Phase 8 language model: parameter counts, seeded init, logits for token ids.
    Model(cmd::model::Args),
    /// Train the model on a text file (GPT-2 BPE, exact gradients, AdamW); checkpoints resume.
    Train(cmd::train::TrainArgs),
    /// Continue a prompt with a trained model (greedy or sampled).
    Generate(cmd::train::GenerateArgs),
    /// Held-out perplexity of trained weights, by KV-cache storage (f32, fp16, 4-bit) and
    /// inference quantisation (W4A8 projections, INT8 attention logits).
    Eval(cmd::eval::Args),
    /// Compare a fresh report with a committed baseline (the CI regression gate).
    Gate(cmd::gate::Args),
    /// Render a report's Markdown from its JSON.
    Report(cmd::report::Args),
}

/// What a command concluded, mapped onto the exit code.
pub enum Outcome {
    /// Everything passed.
    Passed,
    /// A check or gate failed (exit 1).
    Failed,
}

impl Outcome {
    /// `Passed` when `pass`, else `Failed`.
    pub fn from_pass(pass: bool) -> Self {
        if pass {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }

    /// `Failed` when the report holds a record that misses its target.
    pub fn of(report: &muse_verify::Report) -> Self {
        Self::from_pass(report.failures().next().is_none())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Verify(args) => cmd::verify::run(args),
        Cmd::Bench(args) => cmd::bench::run(args),
        Cmd::BkCore(args) => cmd::bk_core::run(args),
        Cmd::Attention(args) => cmd::attention::run(args),
        Cmd::Model(args) => cmd::model::run(args),
        Cmd::Train(args) => cmd::train::run_train(args),
        Cmd::Generate(args) => cmd::train::run_generate(args),
        Cmd::Eval(args) => cmd::eval::run(args),
        Cmd::Gate(args) => cmd::gate::run(args),
        Cmd::Report(args) => cmd::report::run(args),
    };
    match result {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = cmd::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}
