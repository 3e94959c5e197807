//! [`SharedPool`] and its [`OwnedBlock`]: the books of a [`Pool`](super::Pool) behind an
//! `Arc<Mutex<…>>`, for owners that must be `Send` (a model keeping its workspace in a `Mutex`,
//! a block dropped on another thread). Same free lists, counters and peaks as `Pool`: both run
//! `pool/slabs.rs`; tests: `tests/shared.rs`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::slabs::Inner;
use crate::class::SizeClass;
use crate::config::PoolConfig;
use crate::error::Result;
use crate::source::{HostAddressSpace, SlabSource};
use crate::stats::PoolStats;

/// A size-class pool like [`Pool`](super::Pool), owned through a cheap, cloneable handle: its
/// blocks ([`OwnedBlock`]) hold a reference to the pool instead of borrowing it, so they can be
/// stored in structs, sent to other threads and outlive every handle.
///
/// Clones are handles on the same pool. The slabs go back to the source when the last handle
/// and the last block are gone (or earlier, through [`SharedPool::trim`]).
///
/// # Still one pool per stream
/// The mutex makes the books thread-safe, not the memory: a freed block goes to the next
/// `alloc` with no event in between, so every block of one pool must be used on one CUDA stream
/// (or be synchronised before it drops, as `muse_cuda::Buf` does). See [`Pool`](super::Pool).
///
/// ```
/// use muse_pool::{HostAddressSpace, SharedPool};
/// let pool = SharedPool::new(HostAddressSpace::new());
/// let a = pool.alloc(3000)?; // class 3072 B
/// let addr = a.addr();
/// let handle = pool.clone();
/// std::thread::spawn(move || drop(a)).join().unwrap(); // freed on another thread
/// let b = handle.alloc(2900)?; // same class: the block just freed (LIFO)
/// assert_eq!((b.addr(), b.class_bytes()), (addr, 3072));
/// assert_eq!(pool.stats().hits, 1);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub struct SharedPool<S: SlabSource = HostAddressSpace> {
    shared: Arc<Shared<S>>,
}

/// What handles and blocks share; gives every slab back when the last of them drops.
struct Shared<S: SlabSource> {
    inner: Mutex<Inner<S>>,
}

impl<S: SlabSource> Shared<S> {
    /// The books. A panic while they were locked (a `with_source` closure) leaves them
    /// consistent, so a poisoned lock is used as is rather than failing every later drop.
    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: SlabSource> Drop for Shared<S> {
    fn drop(&mut self) {
        // No block can be live: each holds an `Arc` to this.
        self.inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .release_all();
    }
}

/// A block handed out by [`SharedPool::alloc`]; dropping it returns it to the pool's LIFO free
/// list (or, for a dedicated huge block, its slab to the source), on whichever thread it drops.
///
/// ```
/// use muse_pool::{HostAddressSpace, OwnedBlock, SharedPool};
/// let pool = SharedPool::new(HostAddressSpace::new());
/// let b: OwnedBlock = pool.alloc(300)?;
/// assert_eq!((b.requested(), b.class_bytes(), b.addr() % 256), (300, 320, 0));
/// drop(pool); // the block keeps the pool alive
/// assert!(!b.is_dedicated());
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub struct OwnedBlock<S: SlabSource = HostAddressSpace> {
    shared: Arc<Shared<S>>,
    addr: u64,
    requested: usize,
    class_bytes: usize,
    class: Option<SizeClass>,
}

impl<S: SlabSource> OwnedBlock<S> {
    /// Device (or virtual) address of the block; a multiple of 256.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Bytes the caller asked for.
    pub fn requested(&self) -> usize {
        self.requested
    }

    /// Bytes the block owns (its class size, or a dedicated block's request rounded up to
    /// 256 B); always `>= requested()`.
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

impl<S: SlabSource> Drop for OwnedBlock<S> {
    fn drop(&mut self) {
        self.shared
            .lock()
            .release(self.addr, self.class, self.requested, self.class_bytes);
    }
}

impl<S: SlabSource> fmt::Debug for OwnedBlock<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBlock")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("requested", &self.requested)
            .field("class_bytes", &self.class_bytes)
            .finish()
    }
}

impl<S: SlabSource> Clone for SharedPool<S> {
    fn clone(&self) -> Self {
        SharedPool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: SlabSource> SharedPool<S> {
    /// A pool with the default [`PoolConfig`] (2 MiB slabs, 64 MiB huge threshold).
    pub fn new(source: S) -> Self {
        Self::build(source, PoolConfig::default())
    }

    /// A pool with a checked `config`.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, PoolConfig, SharedPool};
    /// let pool = SharedPool::with_config(HostAddressSpace::new(), PoolConfig::default().huge_threshold(1 << 20))?;
    /// assert!(pool.alloc((1 << 20) + 1)?.is_dedicated());
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn with_config(source: S, config: PoolConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(source, config))
    }

    fn build(source: S, config: PoolConfig) -> Self {
        SharedPool {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::new(source, config)),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> PoolConfig {
        self.shared.lock().config
    }

    /// A block of at least `bytes` bytes at a 256-B-aligned address; errors as
    /// [`Pool::alloc`](super::Pool::alloc), after which the pool stays usable.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, PoolError, SharedPool};
    /// let pool = SharedPool::new(HostAddressSpace::with_limit(1 << 20));
    /// assert_eq!(pool.alloc(0).unwrap_err(), PoolError::ZeroSize);
    /// assert!(pool.alloc(1000).is_err()); // a 2 MiB slab exceeds the 1 MiB limit
    /// assert_eq!(pool.stats().failed_allocs, 1);
    /// ```
    pub fn alloc(&self, bytes: usize) -> Result<OwnedBlock<S>> {
        let (addr, class, class_bytes) = self.shared.lock().alloc(bytes)?;
        Ok(OwnedBlock {
            shared: Arc::clone(&self.shared),
            addr,
            requested: bytes,
            class_bytes,
            class,
        })
    }

    /// Counters and byte sums now (the same books as [`Pool::stats`](super::Pool::stats)).
    pub fn stats(&self) -> PoolStats {
        self.shared.lock().snapshot()
    }

    /// `1 − Σrequested / Σclass bytes` over live blocks (0 when none is live).
    pub fn internal_fragmentation(&self) -> f64 {
        self.stats().internal_fragmentation()
    }

    /// Restarts the peaks from the current live and reserved bytes.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, SharedPool};
    /// let pool = SharedPool::new(HostAddressSpace::new());
    /// drop(pool.alloc(1 << 20)?);
    /// assert_eq!(pool.stats().peak_live_class_bytes, 1 << 20);
    /// pool.reset_peak();
    /// assert_eq!(pool.stats().peak_live_class_bytes, 0);
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn reset_peak(&self) {
        self.shared.lock().reset_peak();
    }

    /// Gives every wholly free slab back to the source; returns the bytes released.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, SharedPool};
    /// let pool = SharedPool::new(HostAddressSpace::new());
    /// drop(pool.alloc(100_000)?);
    /// assert!(pool.trim() > 0);
    /// assert_eq!(pool.stats().reserved_bytes, 0);
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn trim(&self) -> usize {
        self.shared.lock().trim()
    }

    /// Runs `f` on the slab source (for its counters), under the pool's lock.
    ///
    /// `f` must not use this pool (allocate, trim, or drop one of its blocks): the lock is
    /// held while `f` runs, and a nested use deadlocks.
    ///
    /// ```
    /// use muse_pool::{HostAddressSpace, SharedPool};
    /// let pool = SharedPool::new(HostAddressSpace::new());
    /// let _b = pool.alloc(1000)?;
    /// assert_eq!(pool.with_source(|s| s.reserved_bytes()), 2 << 20);
    /// # Ok::<(), muse_pool::PoolError>(())
    /// ```
    pub fn with_source<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.lock().source)
    }
}

impl<S: SlabSource> fmt::Debug for SharedPool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shared.inner.try_lock() {
            Ok(inner) => f
                .debug_struct("SharedPool")
                .field("config", &inner.config)
                .field("stats", &inner.snapshot())
                .finish(),
            Err(_) => f.write_str("SharedPool { <in use> }"),
        }
    }
}
