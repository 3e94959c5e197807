use thiserror::Error;

/// Result with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a kernel call can reject or fail with. Messages name the op, the argument, the rule,
/// what was expected and what was given.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument has the wrong shape.
    #[error("{op}: `{arg}` must have shape {expected}, got {got:?}")]
    Shape {
        /// Operation name, e.g. `bk_core`.
        op: &'static str,
        /// Argument name.
        arg: &'static str,
        /// Expected shape, spelled with its symbols, e.g. `[B, N-1] = [16, 4095]`.
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A dimension that must be positive is zero.
    #[error("{op}: {dim} must be at least 1 (`{arg}` has shape {shape:?})")]
    Empty {
        /// Operation name.
        op: &'static str,
        /// Argument whose shape shows the empty dimension.
        arg: &'static str,
        /// The dimension, e.g. `N` or `B`.
        dim: &'static str,
        /// The shape that was passed.
        shape: Vec<usize>,
    },
    /// An input holds NaN or ±inf.
    #[error("{op}: `{arg}` is {value} at {index:?}; clean the input{}", if *op == "bk_core" { ", or use the original's sanitation (compat `sanitize`)" } else { "" })]
    NonFinite {
        /// Operation name.
        op: &'static str,
        /// Argument name.
        arg: &'static str,
        /// Index of the first offending element.
        index: Vec<usize>,
        /// The offending value.
        value: f64,
    },
    /// An argument is out of its domain (e.g. a non-finite shift `z`).
    #[error("{op}: `{arg}` {rule}")]
    Domain {
        /// Operation name.
        op: &'static str,
        /// Argument name.
        arg: &'static str,
        /// The violated rule, phrased to follow the argument name.
        rule: String,
    },
    /// `T − zI` is singular, or an elimination pivot vanished, so the result is not finite.
    #[error("{op}: T - zI is singular or a pivot vanished in row {row} at position {index} (z = {z_re}{z_im:+}i); move z off the spectrum, e.g. give it a nonzero imaginary part")]
    Singular {
        /// Operation name.
        op: &'static str,
        /// Batch row.
        row: usize,
        /// Position in the row of the first non-finite value.
        index: usize,
        /// Re z.
        z_re: f64,
        /// Im z.
        z_im: f64,
    },
    /// A ball point lies on or outside the Poincaré ball of the curvature.
    #[error("{op}: `{arg}` row {row} is not inside the Poincaré ball: sqrt(c)*|x| = {radius} >= 1 (c = {c}); map tangent vectors with exp0, or clip points with projx")]
    OutOfBall {
        /// Operation name.
        op: &'static str,
        /// Argument name.
        arg: &'static str,
        /// Flat row index of the first offending point.
        row: usize,
        /// √c·‖x‖ of that point.
        radius: f64,
        /// The curvature.
        c: f64,
    },
    /// The backend cannot run this operation or precision.
    #[error("{op}: not supported on the {backend} backend: {what}")]
    Unsupported {
        /// Operation name.
        op: &'static str,
        /// Backend name.
        backend: &'static str,
        /// What is missing.
        what: String,
    },
    /// A backend-specific failure (device, driver, launch); the message names the backend.
    #[error("{message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What failed, with its cause.
        message: String,
    },
}
