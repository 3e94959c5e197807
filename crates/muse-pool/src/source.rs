//! Where slabs come from: the [`SlabSource`] trait and [`HostAddressSpace`], a source of
//! virtual address ranges with no memory behind them (design `hyperbolic.md` §10).
//!
//! The CUDA source (`cuMemAlloc`/`cuMemFree`) lives in the CUDA crate; the pool only ever sees
//! `u64` base addresses and sizes.

use std::collections::BTreeMap;

use crate::class::ALIGN;
use crate::error::{PoolError, Result};

/// A provider of large, 256-B-aligned address ranges ("slabs") that the pool cuts into blocks.
///
/// Implementations must return non-overlapping ranges aligned to [`ALIGN`], and must accept
/// back exactly the `(base, bytes)` pairs they handed out.
///
/// ```
/// use muse_pool::{PoolError, SlabSource};
/// /// Hands out one fixed arena once.
/// struct Arena { base: u64, bytes: usize, taken: bool }
/// impl SlabSource for Arena {
///     fn alloc_slab(&mut self, bytes: usize) -> Result<u64, PoolError> {
///         if self.taken || bytes > self.bytes {
///             return Err(PoolError::OutOfMemory {
///                 requested: bytes, slab_bytes: bytes, reserved_bytes: 0, limit: Some(self.bytes),
///             });
///         }
///         self.taken = true;
///         Ok(self.base)
///     }
///     fn free_slab(&mut self, _base: u64, _bytes: usize) { self.taken = false; }
/// }
/// let pool = muse_pool::Pool::new(Arena { base: 1 << 32, bytes: 4 << 20, taken: false });
/// assert_eq!(pool.alloc(1000)?.addr(), 1 << 32);
/// # Ok::<(), PoolError>(())
/// ```
pub trait SlabSource {
    /// A new slab of `bytes ≥ 1` bytes (the pool asks for multiples of [`ALIGN`]); returns its
    /// base address, a multiple of [`ALIGN`].
    ///
    /// Failing is not fatal: the pool passes the error to the caller and stays usable.
    fn alloc_slab(&mut self, bytes: usize) -> Result<u64>;

    /// Takes back a slab that `alloc_slab` returned, with the same `bytes`.
    fn free_slab(&mut self, base: u64, bytes: usize);
}

/// A [`SlabSource`] of virtual address ranges from a counter: no memory, only addresses.
///
/// Ranges never overlap and are never reused (the counter only grows), so a stale address
/// cannot alias a later slab. An optional limit on the bytes handed out at once makes
/// out-of-memory paths testable. It counts slab allocations and frees.
///
/// ```
/// use muse_pool::{HostAddressSpace, SlabSource};
/// let mut src = HostAddressSpace::with_limit(1 << 20);
/// let a = src.alloc_slab(4096)?;
/// assert_eq!(a % 256, 0);
/// assert_eq!(src.slab_containing(a + 100, 10), Some((a, 4096)));
/// assert!(src.alloc_slab(1 << 20).is_err()); // 4096 + 1 MiB > 1 MiB
/// src.free_slab(a, 4096);
/// assert_eq!((src.slab_allocs(), src.slab_frees(), src.reserved_bytes()), (1, 1, 0));
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HostAddressSpace {
    next: u64,
    limit: Option<usize>,
    reserved: usize,
    peak_reserved: usize,
    slab_allocs: u64,
    slab_frees: u64,
    invalid_frees: u64,
    live: BTreeMap<u64, usize>,
}

impl Default for HostAddressSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl HostAddressSpace {
    /// The first address handed out (4 GiB: address 0 and small integers are never valid).
    pub const BASE: u64 = 1 << 32;

    /// An unlimited address space.
    pub fn new() -> Self {
        HostAddressSpace {
            next: Self::BASE,
            limit: None,
            reserved: 0,
            peak_reserved: 0,
            slab_allocs: 0,
            slab_frees: 0,
            invalid_frees: 0,
            live: BTreeMap::new(),
        }
    }

    /// An address space that refuses a slab once `limit` bytes would be out at once.
    pub fn with_limit(limit: usize) -> Self {
        HostAddressSpace {
            limit: Some(limit),
            ..Self::new()
        }
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Bytes in slabs handed out and not yet freed.
    pub fn reserved_bytes(&self) -> usize {
        self.reserved
    }

    /// The most bytes that were out at once.
    pub fn peak_reserved_bytes(&self) -> usize {
        self.peak_reserved
    }

    /// Successful `alloc_slab` calls so far.
    pub fn slab_allocs(&self) -> u64 {
        self.slab_allocs
    }

    /// Successful `free_slab` calls so far.
    pub fn slab_frees(&self) -> u64 {
        self.slab_frees
    }

    /// `free_slab` calls whose `(base, bytes)` was not a live slab (ignored; 0 unless misused).
    pub fn invalid_frees(&self) -> u64 {
        self.invalid_frees
    }

    /// Live slabs as `(base, bytes)`, in address order.
    pub fn live_slabs(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.live.iter().map(|(&b, &n)| (b, n))
    }

    /// The live slab that wholly contains `[addr, addr + len)`, if one does.
    pub fn slab_containing(&self, addr: u64, len: usize) -> Option<(u64, usize)> {
        let (&base, &bytes) = self.live.range(..=addr).next_back()?;
        let end = base.checked_add(bytes as u64)?;
        let last = addr.checked_add(len as u64)?;
        (last <= end).then_some((base, bytes))
    }

    fn out_of_memory(&self, bytes: usize) -> PoolError {
        PoolError::OutOfMemory {
            requested: bytes,
            slab_bytes: bytes,
            reserved_bytes: self.reserved,
            limit: self.limit,
        }
    }
}

impl SlabSource for HostAddressSpace {
    fn alloc_slab(&mut self, bytes: usize) -> Result<u64> {
        if bytes == 0 {
            return Err(PoolError::Invalid {
                op: "HostAddressSpace::alloc_slab",
                name: "bytes",
                rule: "must be at least 1",
                value: 0,
            });
        }
        let total = self
            .reserved
            .checked_add(bytes)
            .ok_or_else(|| self.out_of_memory(bytes))?;
        if self.limit.is_some_and(|l| total > l) {
            return Err(self.out_of_memory(bytes));
        }
        let span = u64::try_from(bytes.next_multiple_of(ALIGN)).ok();
        let next = span.and_then(|s| self.next.checked_add(s));
        let Some(next) = next else {
            return Err(self.out_of_memory(bytes));
        };
        let base = self.next;
        self.next = next;
        self.reserved = total;
        self.peak_reserved = self.peak_reserved.max(total);
        self.slab_allocs += 1;
        self.live.insert(base, bytes);
        Ok(base)
    }

    fn free_slab(&mut self, base: u64, bytes: usize) {
        if self.live.get(&base) == Some(&bytes) {
            self.live.remove(&base);
            self.reserved -= bytes;
            self.slab_frees += 1;
        } else {
            self.invalid_frees += 1;
        }
    }
}
