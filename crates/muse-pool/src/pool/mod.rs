//! [`Pool`] and its RAII [`PoolBlock`]: per-class LIFO free lists carved from slabs (design
//! `hyperbolic.md` §10). Classes: `class.rs`; slabs: `source.rs`; slab bookkeeping: `pool/slabs.rs`;
//! the owned, thread-safe handle: `pool/shared.rs`; tests: `tests/props.rs`, `tests/pool.rs`,
//! `tests/shared.rs`.

mod shared;
mod slabs;

use std::cell::RefCell;
use std::fmt;

use crate::class::SizeClass;
use crate::config::PoolConfig;
use crate::error::Result;
use crate::source::{HostAddressSpace, SlabSource};
use crate::stats::PoolStats;
use slabs::Inner;

pub use shared::{OwnedBlock, SharedPool};

/// A size-class memory pool over the address ranges of a [`SlabSource`].
///
/// `alloc` pops the class's LIFO free list (a hit) or carves the next block of the class's
/// current slab, growing a new slab from the source when that one is used up (a miss).
/// Dropping the [`PoolBlock`] pushes the block back. Requests above
/// [`PoolConfig::huge_threshold`] get a dedicated slab that goes back to the source on drop.
///
/// # One pool per stream
/// `Pool` uses `RefCell` and is deliberately `!Sync`: give each CUDA stream its own pool.
/// On one stream, work runs in launch order, so a block dropped right after launching the
/// kernel that reads it can go to the next kernel on that stream at once. Another stream
/// could overwrite it while that kernel still runs; reuse across streams needs an event
/// (recorded on the first stream, waited on by the second), which this pool does not track.
///
/// ```compile_fail
/// fn shared_across_threads<T: Sync>() {}
/// shared_across_threads::<muse_pool::Pool>(); // error: `RefCell` is not `Sync`
/// ```
///
/// ```
/// use muse_pool::{HostAddressSpace, Pool};
/// let pool = Pool::new(HostAddressSpace::new());
/// let a = pool.alloc(3000)?; // class 3072 B
/// let addr = a.addr();
/// drop(a);
/// let b = pool.alloc(2900)?; // same class: the block just freed (LIFO)
/// assert_eq!((b.addr(), b.class_bytes()), (addr, 3072));
/// assert_eq!(pool.stats().hits, 1);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub struct Pool<S: SlabSource = HostAddressSpace> {
    inner: RefCell<Inner<S>>,
}

/// A block handed out by [`Pool::alloc`]; dropping it returns it to the pool.
///
/// ```
/// use muse_pool::{HostAddressSpace, Pool};
/// let pool = Pool::new(HostAddressSpace::new());
/// let b = pool.alloc(300)?;
/// assert_eq!((b.requested(), b.class_bytes(), b.addr() % 256), (300, 320, 0));
/// assert!(!b.is_dedicated());
/// drop(b);
/// assert_eq!(pool.stats().live_blocks, 0);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub struct PoolBlock<'p, S: SlabSource = HostAddressSpace> {
    pool: &'p Pool<S>,
    addr: u64,
    requested: usize,
    class_bytes: usize,
    class: Option<SizeClass>,
}

impl<S: SlabSource> PoolBlock<'_, S> {
    /// Device (or virtual) address of the block; a multiple of 256.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Bytes the caller asked for.
    pub fn requested(&self) -> usize {
        self.requested
    }

    /// Bytes the block owns: its class size, or for a dedicated huge block the request
    /// rounded up to 256 B. Always `>= requested()`.
    pub fn class_bytes(&self) -> usize {
        self.class_bytes
    }

    /// The size class, or `None` for a dedicated huge block.
    pub fn class(&self) -> Option<SizeClass> {
        self.class
    }

    /// Whether the block has its own slab (a request above the huge threshold).
    pub fn is_dedicated(&self) -> bool {
        self.class.is_none()
    }
}

impl<S: SlabSource> Drop for PoolBlock<'_, S> {
    fn drop(&mut self) {
        self.pool.release(self);
    }
}

impl<S: SlabSource> fmt::Debug for PoolBlock<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBlock")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("requested", &self.requested)
            .field("class_bytes", &self.class_bytes)
            .finish()
    }
}

impl<S: SlabSource> Pool<S> {
    /// A pool with the default [`PoolConfig`] (2 MiB slabs, 64 MiB huge threshold).
    pub fn new(source: S) -> Self {
        Self::build(source, PoolConfig::default())
    }

    /// A pool with a checked `config`.
    pub fn with_config(source: S, config: PoolConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(source, config))
    }

    fn build(source: S, config: PoolConfig) -> Self {
        Pool {
            inner: RefCell::new(Inner::new(source, config)),
        }
    }

    /// The configuration.
    pub fn config(&self) -> PoolConfig {
        self.inner.borrow().config
    }

    /// A block of at least `bytes` bytes at a 256-B-aligned address.
    ///
    /// Errors: [`PoolError::ZeroSize`](crate::PoolError::ZeroSize),
    /// [`PoolError::TooLarge`](crate::PoolError::TooLarge), or the source's error
    /// (out of memory) when a new slab was needed; the pool stays usable after any of them.
    pub fn alloc(&self, bytes: usize) -> Result<PoolBlock<'_, S>> {
        let (addr, class, class_bytes) = self.inner.borrow_mut().alloc(bytes)?;
        Ok(PoolBlock {
            pool: self,
            addr,
            requested: bytes,
            class_bytes,
            class,
        })
    }

    fn release(&self, block: &PoolBlock<'_, S>) {
        self.inner.borrow_mut().release(
            block.addr,
            block.class,
            block.requested,
            block.class_bytes,
        );
    }

    /// Counters and byte sums now.
    pub fn stats(&self) -> PoolStats {
        self.inner.borrow().snapshot()
    }

    /// `1 − Σrequested / Σclass bytes` over live blocks (0 when none is live); see
    /// [`PoolStats::internal_fragmentation`].
    pub fn internal_fragmentation(&self) -> f64 {
        self.stats().internal_fragmentation()
    }

    /// Restarts the peaks from the current live and reserved bytes.
    pub fn reset_peak(&self) {
        self.inner.borrow_mut().reset_peak();
    }

    /// Gives every wholly free slab back to the source; returns the bytes released.
    ///
    /// A slab is wholly free when all its blocks sit in the free list (or were never carved).
    /// Free lists keep their LIFO order for the blocks that stay.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, Pool};
    /// let pool = Pool::new(HostAddressSpace::new());
    /// let keep = pool.alloc(4096)?;
    /// drop(pool.alloc(100_000)?);
    /// let released = pool.trim(); // the 100 000 B class's slab; the 4 KiB one is in use
    /// assert_eq!(pool.stats().reserved_bytes, 2 << 20);
    /// assert!(released > 0);
    /// # drop(keep);
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn trim(&self) -> usize {
        self.inner.borrow_mut().trim()
    }

    /// Runs `f` on the slab source (for its counters).
    ///
    /// `f` must not call back into this pool (allocate, or drop one of its blocks): the pool
    /// is borrowed while `f` runs, and a nested use panics.
    pub fn with_source<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.inner.borrow().source)
    }
}

impl<S: SlabSource> Drop for Pool<S> {
    fn drop(&mut self) {
        // No block can be live: each borrows the pool.
        self.inner.get_mut().release_all();
    }
}

impl<S: SlabSource> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("Pool")
                .field("config", &inner.config)
                .field("stats", &inner.stats)
                .finish(),
            Err(_) => f.write_str("Pool { <in use> }"),
        }
    }
}
