//! The books of a [`Pool`](super::Pool): per-class free lists and carving cursors, the slab
//! registry, and the counters (design `hyperbolic.md` §10). Public face: `pool/mod.rs`.

use std::collections::{BTreeMap, BTreeSet};

use crate::class::{class_of, SizeClass, ALIGN};
use crate::config::PoolConfig;
use crate::error::{PoolError, Result};
use crate::source::SlabSource;
use crate::stats::PoolStats;

/// Everything a pool keeps behind its `RefCell`.
pub(super) struct Inner<S> {
    pub(super) source: S,
    pub(super) config: PoolConfig,
    classes: Vec<ClassState>,
    slabs: BTreeMap<u64, SlabRec>,
    pub(super) stats: PoolStats,
}

/// Free list and carving cursor of one class; `base == end == 0`: no current slab.
#[derive(Default)]
struct ClassState {
    free: Vec<u64>,
    base: u64,
    cursor: u64,
    end: u64,
}

struct SlabRec {
    bytes: usize,
    /// `None`: a dedicated huge block's slab.
    class: Option<SizeClass>,
}

impl<S: SlabSource> Inner<S> {
    pub(super) fn new(source: S, config: PoolConfig) -> Self {
        Inner {
            source,
            config,
            classes: Vec::new(),
            slabs: BTreeMap::new(),
            stats: PoolStats::default(),
        }
    }

    /// Address, class (`None`: dedicated) and class bytes of a new block; counts it live.
    pub(super) fn alloc(&mut self, bytes: usize) -> Result<(u64, Option<SizeClass>, usize)> {
        let (addr, class, class_bytes) = if bytes > self.config.huge_threshold {
            let (addr, rounded) = self.alloc_huge(bytes)?;
            (addr, None, rounded)
        } else {
            let class = class_of(bytes)?;
            (self.alloc_class(class, bytes)?, Some(class), class.bytes())
        };
        let s = &mut self.stats;
        s.live_blocks += 1;
        s.live_requested_bytes += bytes;
        s.live_class_bytes += class_bytes;
        s.peak_live_class_bytes = s.peak_live_class_bytes.max(s.live_class_bytes);
        Ok((addr, class, class_bytes))
    }

    pub(super) fn release(
        &mut self,
        addr: u64,
        class: Option<SizeClass>,
        requested: usize,
        class_bytes: usize,
    ) {
        let s = &mut self.stats;
        s.live_blocks -= 1;
        s.live_requested_bytes -= requested;
        s.live_class_bytes -= class_bytes;
        match class {
            Some(c) => self.classes[c.index()].free.push(addr),
            None => {
                self.slabs.remove(&addr);
                self.source.free_slab(addr, class_bytes);
                self.stats.reserved_bytes -= class_bytes;
                self.stats.slab_frees += 1;
            }
        }
    }

    /// The counters now, with the idle reserve derived.
    pub(super) fn snapshot(&self) -> PoolStats {
        PoolStats {
            idle_reserved_bytes: self.stats.reserved_bytes - self.stats.live_class_bytes,
            ..self.stats
        }
    }

    /// Restarts the peaks from the current live and reserved bytes.
    pub(super) fn reset_peak(&mut self) {
        let s = &mut self.stats;
        s.peak_live_class_bytes = s.live_class_bytes;
        s.peak_reserved_bytes = s.reserved_bytes;
    }

    /// Gives every slab back (the pool is dropping: no block is live).
    pub(super) fn release_all(&mut self) {
        for (base, rec) in std::mem::take(&mut self.slabs) {
            self.source.free_slab(base, rec.bytes);
        }
    }

    fn alloc_class(&mut self, class: SizeClass, requested: usize) -> Result<u64> {
        let i = class.index();
        if i >= self.classes.len() {
            self.classes.resize_with(i + 1, ClassState::default);
        }
        let cls = &mut self.classes[i];
        if let Some(addr) = cls.free.pop() {
            self.stats.hits += 1;
            return Ok(addr);
        }
        let stride = class.stride() as u64;
        if cls.end - cls.cursor < stride {
            let bytes = self.config.slab_bytes_for(class);
            let base = grow(&mut self.source, &mut self.stats, bytes, requested)?;
            self.slabs.insert(
                base,
                SlabRec {
                    bytes,
                    class: Some(class),
                },
            );
            (cls.base, cls.cursor, cls.end) = (base, base, base + bytes as u64);
        }
        let addr = cls.cursor;
        cls.cursor += stride;
        self.stats.misses += 1;
        Ok(addr)
    }

    fn alloc_huge(&mut self, requested: usize) -> Result<(u64, usize)> {
        let bytes = requested
            .checked_next_multiple_of(ALIGN)
            .ok_or(PoolError::TooLarge {
                bytes: requested,
                max: usize::MAX - (ALIGN - 1),
            })?;
        let base = grow(&mut self.source, &mut self.stats, bytes, requested)?;
        self.slabs.insert(base, SlabRec { bytes, class: None });
        self.stats.misses += 1;
        Ok((base, bytes))
    }

    pub(super) fn trim(&mut self) -> usize {
        let mut released = 0;
        for (i, cls) in self.classes.iter_mut().enumerate() {
            if cls.free.is_empty() {
                continue; // every carved block is live: no slab of this class is wholly free
            }
            let stride = SizeClass::from_index(i)
                .expect("invariant: class states exist only for classes")
                .stride();
            let bases: Vec<u64> = cls.free.iter().map(|&a| slab_of(&self.slabs, a)).collect();
            let mut free_in: BTreeMap<u64, usize> = BTreeMap::new();
            for &b in &bases {
                *free_in.entry(b).or_default() += 1;
            }
            let mut freed = BTreeSet::new();
            for (&base, &n_free) in &free_in {
                let bytes = self.slabs[&base].bytes;
                let uncarved = if base == cls.base {
                    ((cls.end - cls.cursor) / stride as u64) as usize
                } else {
                    0
                };
                if n_free + uncarved == bytes / stride {
                    freed.insert(base);
                    self.slabs.remove(&base);
                    self.source.free_slab(base, bytes);
                    self.stats.reserved_bytes -= bytes;
                    self.stats.slab_frees += 1;
                    released += bytes;
                }
            }
            let mut k = 0;
            cls.free.retain(|_| {
                k += 1;
                !freed.contains(&bases[k - 1])
            });
            if freed.contains(&cls.base) {
                (cls.base, cls.cursor, cls.end) = (0, 0, 0);
            }
        }
        released
    }
}

/// The base of the slab holding the free block `addr`.
fn slab_of(slabs: &BTreeMap<u64, SlabRec>, addr: u64) -> u64 {
    let (&base, rec) = slabs
        .range(..=addr)
        .next_back()
        .expect("invariant: a free block lies in a registered slab");
    debug_assert!(rec.class.is_some() && addr < base + rec.bytes as u64);
    base
}

/// A new slab of `bytes` from the source, checked and counted.
fn grow<S: SlabSource>(
    source: &mut S,
    stats: &mut PoolStats,
    bytes: usize,
    requested: usize,
) -> Result<u64> {
    let base = match source.alloc_slab(bytes) {
        Ok(base) => base,
        Err(e) => {
            stats.failed_allocs += 1;
            return Err(match e {
                PoolError::OutOfMemory {
                    slab_bytes,
                    reserved_bytes,
                    limit,
                    ..
                } => PoolError::OutOfMemory {
                    requested,
                    slab_bytes,
                    reserved_bytes,
                    limit,
                },
                other => other,
            });
        }
    };
    let bad = if base % ALIGN as u64 != 0 {
        Some("is not 256-B aligned")
    } else if base.checked_add(bytes as u64).is_none() {
        Some("runs past the end of the address space")
    } else {
        None
    };
    if let Some(why) = bad {
        source.free_slab(base, bytes);
        stats.failed_allocs += 1;
        return Err(PoolError::Source {
            slab_bytes: bytes,
            message: format!("the slab at {base:#x} {why}"),
        });
    }
    stats.reserved_bytes += bytes;
    stats.peak_reserved_bytes = stats.peak_reserved_bytes.max(stats.reserved_bytes);
    stats.slab_allocs += 1;
    Ok(base)
}
