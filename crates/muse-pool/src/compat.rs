//! The original's pure-Python pool (`src/kernels/memory_pool_triton.py`), rule for rule, for
//! parity (design `hyperbolic.md` §10 "Compat"). Tests: `tests/compat.rs`.
//!
//! Blocks are whole tensors of fixed shapes, preallocated at creation: per shape,
//! `n = max(2, min(4, ⌊target / (#shapes · bytes)⌋))` blocks, each skipped once the total
//! would pass the target (256 MiB → 16 blocks / 208 MiB). `alloc` takes the first idle block of
//! the exact shape, else the first idle block of the first pool (insertion order) with
//! numel ≥ the request (a view), else a new tensor, pooled if the total stays ≤ the maximum.
//! Its "fragmentation" is `1 − in use / total` bytes (1.0 when idle). Its defects are kept:
//! linear scans, first fit, one dtype per pool.

use std::collections::BTreeMap;

use crate::error::{PoolError, Result};
use crate::source::{HostAddressSpace, SlabSource};

/// The original's `DEFAULT_BLOCK_SIZES`: 4, 8, 16, 32 and 16 MiB in fp16.
pub const DEFAULT_SHAPES: [[usize; 4]; 5] = [
    [4, 8, 1024, 64],
    [4, 8, 2048, 64],
    [4, 8, 4096, 64],
    [4, 8, 8192, 64],
    [1, 8, 16384, 64],
];

const MIB: usize = 1 << 20;

/// Constructor arguments of the original (`initial_size_mb`, `max_size_mb`, `block_sizes`,
/// `dtype`), with sizes in bytes.
///
/// ```
/// use muse_pool::compat::CompatConfig;
/// let c = CompatConfig::mib(64, 1024);
/// assert_eq!((c.initial_bytes, c.max_bytes, c.elem_bytes, c.shapes.len()), (64 << 20, 1 << 30, 2, 5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatConfig {
    /// Preallocation target (original default 256 MiB).
    pub initial_bytes: usize,
    /// Largest total of pooled blocks (original default 1024 MiB).
    pub max_bytes: usize,
    /// Block shapes, in insertion order.
    pub shapes: Vec<Vec<usize>>,
    /// Bytes per element (fp16: 2).
    pub elem_bytes: usize,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self::mib(256, 1024)
    }
}

impl CompatConfig {
    /// The default shapes in fp16 with the given target and maximum in MiB.
    pub fn mib(initial_mib: usize, max_mib: usize) -> Self {
        CompatConfig {
            initial_bytes: initial_mib * MIB,
            max_bytes: max_mib * MIB,
            shapes: DEFAULT_SHAPES.iter().map(|s| s.to_vec()).collect(),
            elem_bytes: 2,
        }
    }
}

/// How an allocation was served.
///
/// ```
/// use muse_pool::compat::{CompatConfig, CompatPool, Served};
/// let mut pool = CompatPool::new(muse_pool::HostAddressSpace::new(), CompatConfig::mib(64, 1024))?;
/// let t = pool.alloc(&[2, 8, 1024, 64])?; // no pool of this shape: a view of a 4 MiB block
/// assert_eq!(t.served(), Served::View);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// An idle block of the same shape (a hit).
    Exact,
    /// The front of an idle block with at least as many elements (a hit).
    View,
    /// A new block, added to the pool (a miss).
    NewPooled,
    /// A new tensor the pool does not keep: the total would pass the maximum (a miss).
    Unpooled,
}

/// A tensor handed out by [`CompatPool::alloc`]; give it back with [`CompatPool::dealloc`].
///
/// ```
/// use muse_pool::compat::{CompatConfig, CompatPool};
/// let mut pool = CompatPool::new(muse_pool::HostAddressSpace::new(), CompatConfig::mib(32, 1024))?;
/// let t = pool.alloc(&[4, 8, 1024, 64])?;
/// assert_eq!((t.shape(), t.bytes()), (&[4, 8, 1024, 64][..], 4 << 20));
/// pool.dealloc(t);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct CompatTensor {
    addr: u64,
    shape: Vec<usize>,
    bytes: usize,
    served: Served,
}

impl CompatTensor {
    /// Address of the first element (the backing block's address for a view).
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// The requested shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Bytes of the requested shape.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// How it was served.
    pub fn served(&self) -> Served {
        self.served
    }
}

/// The original's `get_stats()`.
///
/// ```
/// use muse_pool::compat::{CompatConfig, CompatPool};
/// let pool = CompatPool::new(muse_pool::HostAddressSpace::new(), CompatConfig::mib(256, 1024))?;
/// let s = pool.stats();
/// assert_eq!((s.blocks, s.total_allocated_bytes), (16, 208 << 20));
/// assert_eq!(s.fragmentation_ratio, 1.0); // the original's metric: idle = fragmented
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompatStats {
    /// `allocate` calls.
    pub allocations: u64,
    /// `deallocate` calls.
    pub deallocations: u64,
    /// Exact or view hits.
    pub cache_hits: u64,
    /// New tensors.
    pub cache_misses: u64,
    /// Bytes of pooled blocks.
    pub total_allocated_bytes: usize,
    /// The most `total_allocated_bytes`.
    pub peak_allocated_bytes: usize,
    /// Pooled blocks.
    pub blocks: usize,
    /// Bytes of pooled blocks in use (a view counts its whole block).
    pub in_use_bytes: usize,
    /// `1 − in_use / total` (0 with no blocks).
    pub fragmentation_ratio: f64,
}

struct Block {
    addr: u64,
    bytes: usize,
    in_use: bool,
}

struct ShapePool {
    shape: Vec<usize>,
    numel: usize,
    blocks: Vec<Block>,
}

/// The original's `HyperbolicMemoryPool`, over addresses from a [`SlabSource`] (one slab per
/// tensor, like `torch.empty`).
///
/// ```
/// use muse_pool::compat::{CompatConfig, CompatPool, Served};
/// let mut pool = CompatPool::new(muse_pool::HostAddressSpace::new(), CompatConfig::mib(64, 1024))?;
/// let a = pool.alloc(&[4, 8, 1024, 64])?;
/// assert_eq!(a.served(), Served::Exact);
/// pool.dealloc(a);
/// assert_eq!(pool.stats().cache_hits, 1);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
pub struct CompatPool<S: SlabSource = HostAddressSpace> {
    source: S,
    elem_bytes: usize,
    max_bytes: usize,
    pools: Vec<ShapePool>,
    unpooled: BTreeMap<u64, usize>,
    counts: [u64; 4],
    total: usize,
    peak: usize,
}

impl<S: SlabSource> CompatPool<S> {
    /// Creates the pool and preallocates its blocks (the original's `_initialize_pools`).
    ///
    /// Errors: a shape with no elements, `elem_bytes == 0`, a size overflow, or the source's.
    pub fn new(source: S, config: CompatConfig) -> Result<Self> {
        if config.elem_bytes == 0 {
            return Err(invalid("elem_bytes", "must be at least 1", 0));
        }
        let mut pool = CompatPool {
            source,
            elem_bytes: config.elem_bytes,
            max_bytes: config.max_bytes,
            pools: Vec::new(),
            unpooled: BTreeMap::new(),
            counts: [0; 4],
            total: 0,
            peak: 0,
        };
        let n_shapes = config.shapes.len();
        for shape in &config.shapes {
            let bytes = pool.bytes_of(shape)?;
            if bytes == 0 {
                return Err(invalid("shapes", "must each have at least one element", 0));
            }
            let per_shape = n_shapes.checked_mul(bytes).ok_or_else(overflow)?;
            let n = (config.initial_bytes / per_shape).clamp(2, 4);
            for _ in 0..n {
                if pool.total.saturating_add(bytes) > config.initial_bytes {
                    break;
                }
                let addr = pool.source.alloc_slab(bytes)?;
                // A shape's pool appears with its first block (the original's defaultdict).
                let p = pool.pool_index(shape);
                pool.pools[p].blocks.push(Block {
                    addr,
                    bytes,
                    in_use: false,
                });
                pool.total += bytes;
            }
        }
        pool.peak = pool.total;
        Ok(pool)
    }

    fn bytes_of(&self, shape: &[usize]) -> Result<usize> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        numel
            .and_then(|n| n.checked_mul(self.elem_bytes))
            .ok_or_else(overflow)
    }

    /// Index of the pool for `shape`, appended (insertion order) if new.
    fn pool_index(&mut self, shape: &[usize]) -> usize {
        if let Some(i) = self.pools.iter().position(|p| p.shape == shape) {
            return i;
        }
        self.pools.push(ShapePool {
            shape: shape.to_vec(),
            numel: shape.iter().product(),
            blocks: Vec::new(),
        });
        self.pools.len() - 1
    }

    /// A tensor of `shape` (the original's `allocate`, without `zero_fill`).
    ///
    /// Errors: a size overflow, a new tensor of 0 bytes, or the source's (out of memory).
    pub fn alloc(&mut self, shape: &[usize]) -> Result<CompatTensor> {
        self.counts[0] += 1;
        let bytes = self.bytes_of(shape)?;
        let numel = bytes / self.elem_bytes;
        let exact = self.pools.iter_mut().find(|p| p.shape == shape);
        let mut hit = exact.and_then(take_idle).map(|a| (a, Served::Exact));
        if hit.is_none() {
            hit = self
                .pools
                .iter_mut()
                .filter(|p| p.numel >= numel)
                .find_map(take_idle)
                .map(|a| (a, Served::View));
        }
        if let Some((addr, served)) = hit {
            self.counts[2] += 1;
            return Ok(self.tensor(addr, shape, bytes, served));
        }
        self.counts[3] += 1;
        if bytes == 0 {
            return Err(PoolError::ZeroSize);
        }
        let addr = self.source.alloc_slab(bytes)?;
        if self.total.saturating_add(bytes) <= self.max_bytes {
            let p = self.pool_index(shape);
            self.pools[p].blocks.push(Block {
                addr,
                bytes,
                in_use: true,
            });
            self.total += bytes;
            self.peak = self.peak.max(self.total);
            Ok(self.tensor(addr, shape, bytes, Served::NewPooled))
        } else {
            self.unpooled.insert(addr, bytes);
            Ok(self.tensor(addr, shape, bytes, Served::Unpooled))
        }
    }

    fn tensor(&self, addr: u64, shape: &[usize], bytes: usize, served: Served) -> CompatTensor {
        CompatTensor {
            addr,
            shape: shape.to_vec(),
            bytes,
            served,
        }
    }

    /// Gives `tensor` back (the original's `deallocate`): its block becomes idle; an unpooled
    /// tensor goes back to the source (the original leaves it to the garbage collector).
    pub fn dealloc(&mut self, tensor: CompatTensor) {
        self.counts[1] += 1;
        let block = self
            .pools
            .iter_mut()
            .flat_map(|p| p.blocks.iter_mut())
            .find(|b| b.addr == tensor.addr);
        if let Some(b) = block {
            b.in_use = false;
        } else if let Some(bytes) = self.unpooled.remove(&tensor.addr) {
            self.source.free_slab(tensor.addr, bytes);
        }
    }

    /// Counters and the original's fragmentation metric.
    pub fn stats(&self) -> CompatStats {
        let blocks = self.pools.iter().flat_map(|p| p.blocks.iter());
        let (n, in_use) = blocks.fold((0, 0), |(n, u), b| (n + 1, u + b.in_use as usize * b.bytes));
        CompatStats {
            allocations: self.counts[0],
            deallocations: self.counts[1],
            cache_hits: self.counts[2],
            cache_misses: self.counts[3],
            total_allocated_bytes: self.total,
            peak_allocated_bytes: self.peak,
            blocks: n,
            in_use_bytes: in_use,
            fragmentation_ratio: if self.total == 0 {
                0.0
            } else {
                1.0 - in_use as f64 / self.total as f64
            },
        }
    }

    /// Pooled blocks per shape, in insertion order (shapes without blocks are absent, as in the
    /// original's dict).
    pub fn blocks_per_shape(&self) -> Vec<(Vec<usize>, usize)> {
        let per = |p: &ShapePool| (p.shape.clone(), p.blocks.len());
        self.pools.iter().map(per).collect()
    }
}

fn take_idle(p: &mut ShapePool) -> Option<u64> {
    let b = p.blocks.iter_mut().find(|b| !b.in_use)?;
    b.in_use = true;
    Some(b.addr)
}

fn overflow() -> PoolError {
    PoolError::Invalid {
        op: "CompatPool",
        name: "shape",
        rule: "must have a byte size that fits in usize (numel · elem_bytes overflows)",
        value: u64::MAX,
    }
}

fn invalid(name: &'static str, rule: &'static str, value: u64) -> PoolError {
    PoolError::Invalid {
        op: "CompatPool::new",
        name,
        rule,
        value,
    }
}

impl<S: SlabSource> Drop for CompatPool<S> {
    fn drop(&mut self) {
        for b in self.pools.iter().flat_map(|p| p.blocks.iter()) {
            self.source.free_slab(b.addr, b.bytes);
        }
        for (&addr, &bytes) in &self.unpooled {
            self.source.free_slab(addr, bytes);
        }
    }
}
