//! Verification machinery shared by tests, benches and the `muse` CLI: error statistics,
//! tolerances, golden fixtures, report records (JSON and Markdown), SVG plots and the
//! regression gate.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cases;
mod error;
pub mod fixtures;
pub mod gate;
pub mod plot;
pub mod report;
pub mod stats;
pub mod suite;
pub mod tolerance;

pub use error::{Error, Result};
pub use report::{Record, Report, Target};
pub use stats::ErrorStats;
pub use tolerance::Tolerance;
