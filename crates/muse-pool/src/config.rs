//! [`PoolConfig`]: slab size and the huge-request threshold (design `hyperbolic.md` §10).

use crate::class::{SizeClass, ALIGN, MAX_CLASS_BYTES};
use crate::error::{PoolError, Result};

/// Tuning of a [`Pool`](crate::Pool), checked by [`PoolConfig::validate`].
///
/// ```
/// use muse_pool::{HostAddressSpace, Pool, PoolConfig};
/// let config = PoolConfig::default().slab_bytes(8 << 20).huge_threshold(256 << 20);
/// let pool = Pool::with_config(HostAddressSpace::new(), config)?;
/// assert_eq!(pool.config().slab_bytes, 8 << 20);
/// assert!(Pool::with_config(HostAddressSpace::new(), config.slab_bytes(100)).is_err());
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Target slab size: a class's slab holds `max(1, slab_bytes / stride)` blocks
    /// (default 2 MiB; at least 256).
    pub slab_bytes: usize,
    /// Requests of more bytes get a dedicated slab of the request rounded up to 256 B, which
    /// goes back to the source when the block drops (default 64 MiB; at least 256;
    /// `usize::MAX` turns this off).
    pub huge_threshold: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            slab_bytes: 2 << 20,
            huge_threshold: 64 << 20,
        }
    }
}

impl PoolConfig {
    /// Sets [`slab_bytes`](Self::slab_bytes).
    pub fn slab_bytes(self, slab_bytes: usize) -> Self {
        PoolConfig { slab_bytes, ..self }
    }

    /// Sets [`huge_threshold`](Self::huge_threshold).
    pub fn huge_threshold(self, huge_threshold: usize) -> Self {
        PoolConfig {
            huge_threshold,
            ..self
        }
    }

    /// Checks the fields; the error names the field and the rule.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, rule, value: usize| PoolError::Invalid {
            op: "PoolConfig",
            name,
            rule,
            value: value as u64,
        };
        if self.slab_bytes < ALIGN {
            return Err(invalid(
                "slab_bytes",
                "must be at least 256",
                self.slab_bytes,
            ));
        }
        if self.slab_bytes > MAX_CLASS_BYTES {
            return Err(invalid(
                "slab_bytes",
                "must be at most 7·2^61 (the largest size class)",
                self.slab_bytes,
            ));
        }
        if self.huge_threshold < ALIGN {
            return Err(invalid(
                "huge_threshold",
                "must be at least 256",
                self.huge_threshold,
            ));
        }
        Ok(())
    }

    /// Bytes of one slab for `class`: a whole number of strides, `max(slab_bytes, stride)`
    /// rounded down to the stride.
    ///
    /// ```
    /// use muse_pool::{class_of, PoolConfig};
    /// let c = PoolConfig::default();
    /// assert_eq!(c.slab_bytes_for(class_of(1280)?), 1638 * 1280);
    /// assert_eq!(c.slab_bytes_for(class_of(3 << 20)?), 3 << 20);
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn slab_bytes_for(&self, class: SizeClass) -> usize {
        let stride = class.stride();
        (self.slab_bytes / stride).max(1) * stride
    }
}
