use std::path::PathBuf;

use thiserror::Error;

/// Result with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of fixture loading, report I/O and gating.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file could not be read (wrong dtype, shape or format).
    #[error("{}: not a float64 or float32 .npy array of the expected rank: {source}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ndarray_npy::ReadNpyError,
    },
    /// A `.npy` file could not be written.
    #[error("{}: cannot write .npy: {source}", path.display())]
    NpyWrite {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ndarray_npy::WriteNpyError,
    },
    /// JSON could not be parsed or does not follow the schema.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A fixture does not match its manifest (hash, shape or missing entry).
    #[error("fixture {case}: {message}")]
    Fixture {
        /// The fixture case.
        case: String,
        /// What is wrong.
        message: String,
    },
    /// A kernel call failed.
    #[error(transparent)]
    Kernel(#[from] muse_reference::Error),
    /// The plot could not be drawn.
    #[error("plot {}: {message}", path.display())]
    Plot {
        /// The output file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}
