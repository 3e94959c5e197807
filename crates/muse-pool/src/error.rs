//! The crate's one error type (design `hyperbolic.md` §10; conventions: `style.md` §2.7).

use thiserror::Error;

/// Everything that can go wrong in the pool, its slab sources, the compat pool and the helpers.
///
/// Messages are lowercase, start with the operation, name the argument in backticks and end
/// with the fix.
///
/// ```
/// use muse_pool::{HostAddressSpace, Pool, PoolError};
/// let pool = Pool::new(HostAddressSpace::new());
/// let err = pool.alloc(0).unwrap_err();
/// assert_eq!(err, PoolError::ZeroSize);
/// assert!(err.to_string().contains("`bytes`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// A request for 0 bytes (a pool block always has an address and a size class).
    #[error(
        "pool alloc: `bytes` must be at least 1, got 0; skip the allocation for empty tensors"
    )]
    ZeroSize,

    /// A request above the largest size class (7·2⁶¹ B), or whose rounding overflows.
    #[error("pool alloc: `bytes` = {bytes} exceeds the largest size class ({max} B)")]
    TooLarge {
        /// The request.
        bytes: usize,
        /// The largest request the pool can serve.
        max: usize,
    },

    /// The slab source could not provide a slab.
    #[error(
        "pool alloc: source out of memory for `bytes` = {requested} (slab of {slab_bytes} B; \
         {reserved_bytes} B already reserved, limit {}); drop idle blocks and call \
         `Pool::trim`, or raise the source's limit",
        fmt_limit(.limit)
    )]
    OutOfMemory {
        /// The request that needed a new slab (a source reports the slab size here).
        requested: usize,
        /// The slab the source was asked for.
        slab_bytes: usize,
        /// Bytes the source had already handed out.
        reserved_bytes: usize,
        /// The source's limit, if it has one.
        limit: Option<usize>,
    },

    /// A slab source failed for another reason (a device source wraps its driver error here).
    #[error("pool alloc: slab source failed for a slab of {slab_bytes} B: {message}")]
    Source {
        /// The slab the source was asked for.
        slab_bytes: usize,
        /// The source's own description of the failure.
        message: String,
    },

    /// An argument or configuration value breaks a rule.
    #[error("{op}: `{name}` {rule}, got {value}")]
    Invalid {
        /// The operation or type that checked it (`PoolConfig`, `time_alloc_free_pairs`, …).
        op: &'static str,
        /// The argument or field.
        name: &'static str,
        /// The rule, phrased to follow the name ("must be at least 256").
        rule: &'static str,
        /// The offending value.
        value: u64,
    },
}

fn fmt_limit(limit: &Option<usize>) -> String {
    match limit {
        Some(l) => format!("{l} B"),
        None => "none".to_owned(),
    }
}

/// `Result` with [`PoolError`] as the default error.
///
/// ```
/// fn class_bytes(n: usize) -> muse_pool::Result<usize> {
///     Ok(muse_pool::class_of(n)?.bytes())
/// }
/// assert_eq!(class_bytes(700), Ok(768));
/// ```
pub type Result<T, E = PoolError> = std::result::Result<T, E>;
