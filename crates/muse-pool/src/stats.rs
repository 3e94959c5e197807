//! [`PoolStats`]: counters and byte sums of a [`Pool`](crate::Pool) (design `hyperbolic.md` §10).

/// A snapshot of a pool's counters, from [`Pool::stats`](crate::Pool::stats).
///
/// * hits: allocations served from a class's free list;
/// * misses: allocations that carved a new block (from the class's current slab, a new slab, or
///   a dedicated huge slab); `slab_allocs ≤ misses` counts the slabs obtained from the source;
/// * failed_allocs: allocations that returned an error (the source was out of memory).
///
/// ```
/// use muse_pool::{HostAddressSpace, Pool};
/// let pool = Pool::new(HostAddressSpace::new());
/// drop(pool.alloc(1000)?); // miss: grows a 2 MiB slab of 1 KiB blocks
/// let b = pool.alloc(900)?; // hit: the same block again
/// let s = pool.stats();
/// assert_eq!((s.hits, s.misses, s.slab_allocs, s.live_blocks), (1, 1, 1, 1));
/// assert_eq!((s.live_requested_bytes, s.live_class_bytes), (900, 1024));
/// assert_eq!(s.idle_reserved_bytes, s.reserved_bytes - 1024);
/// assert!((s.internal_fragmentation() - (1.0 - 900.0 / 1024.0)).abs() < 1e-12);
/// # drop(b);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks handed out and not yet dropped.
    pub live_blocks: usize,
    /// Σ requested bytes over live blocks.
    pub live_requested_bytes: usize,
    /// Σ class bytes over live blocks (a dedicated huge block counts its rounded size).
    pub live_class_bytes: usize,
    /// Bytes in slabs obtained from the source and not given back.
    pub reserved_bytes: usize,
    /// `reserved_bytes − live_class_bytes`: free blocks, uncarved slab tails and stride padding.
    pub idle_reserved_bytes: usize,
    /// Allocations served from a free list.
    pub hits: u64,
    /// Allocations that carved a new block.
    pub misses: u64,
    /// Slabs obtained from the source.
    pub slab_allocs: u64,
    /// Slabs given back to the source (by `trim` or a dropped huge block).
    pub slab_frees: u64,
    /// Allocations that failed because the source failed.
    pub failed_allocs: u64,
    /// The most `live_class_bytes` since creation or [`Pool::reset_peak`](crate::Pool::reset_peak).
    pub peak_live_class_bytes: usize,
    /// The most `reserved_bytes` since creation or the last reset.
    pub peak_reserved_bytes: usize,
}

impl PoolStats {
    /// `1 − Σrequested / Σclass bytes` over live blocks; 0 when none is live.
    ///
    /// For requests of at least 256 B the class spacing keeps this below 0.2 (each class is
    /// less than 1.25× the request); smaller requests all use the 256 B class.
    pub fn internal_fragmentation(&self) -> f64 {
        if self.live_class_bytes == 0 {
            0.0
        } else {
            1.0 - self.live_requested_bytes as f64 / self.live_class_bytes as f64
        }
    }

    /// The original's metric, `1 − in use / total`: here `idle_reserved / reserved`
    /// (1 when everything is idle, 0 with nothing reserved).
    pub fn idle_fraction(&self) -> f64 {
        if self.reserved_bytes == 0 {
            0.0
        } else {
            self.idle_reserved_bytes as f64 / self.reserved_bytes as f64
        }
    }
}
