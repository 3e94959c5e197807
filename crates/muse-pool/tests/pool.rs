//! Unit behaviour of `Pool` (src/pool.rs): errors, huge blocks, trim, drop, bad sources.

use std::cell::RefCell;
use std::rc::Rc;

use muse_pool::{HostAddressSpace, Pool, PoolConfig, PoolError, SlabSource};

/// A source the test can still read after the pool that owns it drops.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<HostAddressSpace>>);

impl SlabSource for Shared {
    fn alloc_slab(&mut self, bytes: usize) -> Result<u64, PoolError> {
        self.0.borrow_mut().alloc_slab(bytes)
    }
    fn free_slab(&mut self, base: u64, bytes: usize) {
        self.0.borrow_mut().free_slab(base, bytes)
    }
}

#[test]
fn zero_bytes_is_an_error_naming_the_argument() {
    let pool = Pool::new(HostAddressSpace::new());
    let err = pool.alloc(0).expect_err("zero size");
    assert_eq!(err, PoolError::ZeroSize);
    assert!(err
        .to_string()
        .starts_with("pool alloc: `bytes` must be at least 1, got 0"));
    assert_eq!(pool.stats().failed_allocs, 0);
}

#[test]
fn invalid_configs_are_rejected_with_the_field_named() {
    for (config, field) in [
        (PoolConfig::default().slab_bytes(255), "`slab_bytes`"),
        (PoolConfig::default().slab_bytes(usize::MAX), "`slab_bytes`"),
        (PoolConfig::default().huge_threshold(0), "`huge_threshold`"),
    ] {
        let err = Pool::with_config(HostAddressSpace::new(), config).expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.starts_with("PoolConfig: ") && msg.contains(field),
            "{msg}"
        );
    }
}

#[test]
fn slabs_are_tiled_by_whole_blocks() -> Result<(), PoolError> {
    let pool = Pool::new(HostAddressSpace::new());
    let a = pool.alloc(300)?; // class 320, stride 512: 4096 blocks per 2 MiB slab
    let b = pool.alloc(300)?;
    assert_eq!(b.addr() - a.addr(), 512);
    let c = pool.alloc(1100)?; // class 1280: 1638 blocks, 2 096 640 B
    assert_eq!(pool.stats().reserved_bytes, (2 << 20) + 1638 * 1280);
    let big = pool.alloc(5 << 20)?; // larger than a slab: one block, slab = class
    assert_eq!(big.class_bytes(), 5 << 20);
    assert_eq!(pool.stats().slab_allocs, 3);
    drop((a, b, c, big));
    Ok(())
}

#[test]
fn a_slab_is_grown_only_when_the_current_one_is_used_up() -> Result<(), PoolError> {
    let config = PoolConfig::default().slab_bytes(4096);
    let pool = Pool::with_config(HostAddressSpace::new(), config)?;
    let blocks: Vec<_> = (0..5).map(|_| pool.alloc(1024)).collect::<Result<_, _>>()?;
    let s = pool.stats();
    assert_eq!((s.misses, s.slab_allocs, s.reserved_bytes), (5, 2, 8192));
    drop(blocks);
    assert_eq!(pool.stats().idle_reserved_bytes, 8192);
    Ok(())
}

#[test]
fn huge_blocks_get_a_dedicated_slab_returned_on_drop() -> Result<(), PoolError> {
    let config = PoolConfig::default().huge_threshold(1 << 20);
    let pool = Pool::with_config(HostAddressSpace::new(), config)?;
    let h = pool.alloc((1 << 20) + 1)?;
    assert!(h.is_dedicated() && h.class().is_none());
    assert_eq!(h.class_bytes(), (1 << 20) + 256);
    assert_eq!(pool.with_source(|s| s.reserved_bytes()), (1 << 20) + 256);
    drop(h);
    let s = pool.stats();
    assert_eq!(
        (s.reserved_bytes, s.slab_allocs, s.slab_frees, s.misses),
        (0, 1, 1, 1)
    );
    assert_eq!(
        pool.with_source(|s| (s.reserved_bytes(), s.invalid_frees())),
        (0, 0)
    );
    let at = pool.alloc(1 << 20)?; // at the threshold: pooled
    assert!(!at.is_dedicated());
    Ok(())
}

#[test]
fn trim_returns_only_wholly_free_slabs_and_keeps_lifo_order() -> Result<(), PoolError> {
    let config = PoolConfig::default().slab_bytes(2048);
    let pool = Pool::with_config(HostAddressSpace::new(), config)?;
    // Class 1024: two blocks per slab.
    let v: Vec<_> = (0..4).map(|_| pool.alloc(1024)).collect::<Result<_, _>>()?;
    let addrs: Vec<u64> = v.iter().map(|b| b.addr()).collect();
    let mut v = v.into_iter();
    let (b0, b1, b2, b3) = (v.next(), v.next(), v.next(), v.next());
    drop(b0);
    drop(b2);
    drop(b3); // slab 2 wholly free; slab 1 half
    assert_eq!(pool.trim(), 2048);
    let s = pool.stats();
    assert_eq!((s.reserved_bytes, s.slab_frees), (2048, 1));
    assert_eq!(pool.alloc(1000)?.addr(), addrs[0]); // the one free block left
    drop(b1);
    assert_eq!(pool.trim(), 2048);
    assert_eq!(pool.with_source(|s| s.reserved_bytes()), 0);
    let again = pool.alloc(1024)?; // a fresh slab after a full trim
    assert_eq!(pool.stats().slab_allocs, 3);
    drop(again);
    Ok(())
}

#[test]
fn trim_counts_the_uncarved_tail_of_the_current_slab() -> Result<(), PoolError> {
    let pool = Pool::new(HostAddressSpace::new());
    drop(pool.alloc(4096)?); // 1 of 512 blocks carved, then freed
    assert_eq!(pool.trim(), 2 << 20);
    assert_eq!(pool.stats().reserved_bytes, 0);
    Ok(())
}

#[test]
fn dropping_the_pool_returns_every_slab() -> Result<(), PoolError> {
    let shared = Shared::default();
    {
        let pool = Pool::with_config(
            shared.clone(),
            PoolConfig::default().huge_threshold(1 << 20),
        )?;
        let _a = pool.alloc(300)?;
        drop(pool.alloc(70_000)?);
        let _h = pool.alloc(3 << 20)?;
        drop((_a, _h));
    }
    let src = shared.0.borrow();
    assert_eq!((src.reserved_bytes(), src.invalid_frees()), (0, 0));
    assert_eq!(src.slab_allocs(), src.slab_frees());
    Ok(())
}

#[test]
fn reset_peak_restarts_from_the_current_state() -> Result<(), PoolError> {
    let pool = Pool::new(HostAddressSpace::new());
    let a = pool.alloc(1 << 20)?;
    drop(pool.alloc(1 << 20)?);
    let b = pool.alloc(4096)?;
    assert_eq!(pool.stats().peak_live_class_bytes, 2 << 20);
    drop(a);
    pool.reset_peak();
    let s = pool.stats();
    assert_eq!(
        (s.peak_live_class_bytes, s.peak_reserved_bytes),
        (4096, s.reserved_bytes)
    );
    drop(b);
    Ok(())
}

/// Returns misaligned or overflowing bases.
struct Broken(u64);
impl SlabSource for Broken {
    fn alloc_slab(&mut self, _bytes: usize) -> Result<u64, PoolError> {
        Ok(self.0)
    }
    fn free_slab(&mut self, _base: u64, _bytes: usize) {}
}

#[test]
fn a_misbehaving_source_is_an_error_not_a_panic() {
    for base in [(1 << 32) + 8, u64::MAX - 255] {
        let pool = Pool::new(Broken(base));
        let err = pool.alloc(1000).expect_err("bad slab");
        assert!(matches!(err, PoolError::Source { .. }), "{err}");
        let s = pool.stats();
        assert_eq!(
            (s.reserved_bytes, s.failed_allocs, s.live_blocks),
            (0, 1, 0)
        );
    }
}

#[test]
fn out_of_memory_names_the_request_and_leaves_the_pool_usable() -> Result<(), PoolError> {
    let pool = Pool::new(HostAddressSpace::with_limit(3 << 20));
    let a = pool.alloc(1000)?; // 2 MiB slab of class 1024
    let err = pool
        .alloc(5000)
        .expect_err("second 2 MiB slab exceeds the limit");
    assert_eq!(
        err,
        PoolError::OutOfMemory {
            requested: 5000,
            slab_bytes: 2_094_080, // 409 blocks of 5120 B
            reserved_bytes: 2 << 20,
            limit: Some(3 << 20),
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`bytes` = 5000") && msg.contains("`Pool::trim`"),
        "{msg}"
    );
    let b = pool.alloc(1000)?; // same class: carved from the existing slab
    assert_eq!(b.addr(), a.addr() + 1024);
    drop((a, b));
    pool.trim();
    let c = pool.alloc(5000)?; // room again after trim
    assert_eq!(pool.stats().failed_allocs, 1);
    drop(c);
    Ok(())
}
