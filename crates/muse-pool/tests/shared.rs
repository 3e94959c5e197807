//! `SharedPool` / `OwnedBlock` (src/pool/shared.rs): LIFO reuse through the owned handle, `Send`
//! across threads, and books identical to `Pool`'s (proptest: the same ops on both).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Barrier};

use muse_pool::{
    HostAddressSpace, OwnedBlock, Pool, PoolBlock, PoolConfig, PoolError, SharedPool, SlabSource,
};
use proptest::prelude::*;
use proptest::sample::Index;

// Compile-time: blocks and handles cross threads (the CUDA model keeps them in a `Mutex`).
const fn send<T: Send>() {}
const fn send_sync<T: Send + Sync>() {}
const _: () = send::<OwnedBlock<HostAddressSpace>>();
const _: () = send_sync::<SharedPool<HostAddressSpace>>();

/// A source the test can still read after every handle and block is gone.
#[derive(Clone, Default)]
struct Probe(Rc<RefCell<HostAddressSpace>>);

impl SlabSource for Probe {
    fn alloc_slab(&mut self, bytes: usize) -> Result<u64, PoolError> {
        self.0.borrow_mut().alloc_slab(bytes)
    }
    fn free_slab(&mut self, base: u64, bytes: usize) {
        self.0.borrow_mut().free_slab(base, bytes)
    }
}

#[test]
fn owned_blocks_reuse_the_last_freed_block_of_their_class() -> Result<(), PoolError> {
    let pool = SharedPool::new(HostAddressSpace::new());
    let (a, b, c) = (pool.alloc(1000)?, pool.alloc(1024)?, pool.alloc(900)?);
    let (addr_b, addr_c) = (b.addr(), c.addr());
    assert_eq!(c.addr() - a.addr(), 2048, "carved in order from one slab");
    drop(b);
    drop(c);
    let again = pool.clone(); // a second handle on the same free lists
    assert_eq!(again.alloc(1001)?.addr(), addr_c); // the last freed first
    let d = pool.alloc(1)?; // another class: a miss, not the 1 KiB block
    assert_eq!(d.class_bytes(), 256);
    assert_eq!(again.alloc(1024)?.addr(), addr_c);
    let s = pool.stats();
    assert_eq!((s.hits, s.misses, s.live_blocks), (2, 4, 2));
    let held = pool.alloc(1024)?;
    assert_eq!(held.addr(), addr_c);
    assert_eq!(pool.alloc(1024)?.addr(), addr_b);
    drop((a, d, held));
    Ok(())
}

#[test]
fn a_block_allocated_on_one_thread_drops_on_another() -> Result<(), PoolError> {
    let pool = SharedPool::with_config(
        HostAddressSpace::new(),
        PoolConfig::default().huge_threshold(1 << 20),
    )?;
    let small = pool.alloc(5000)?;
    let huge = pool.alloc(3 << 20)?; // a dedicated slab, returned to the source on drop
    let addr = small.addr();
    assert_eq!(pool.stats().live_blocks, 2);
    std::thread::spawn(move || drop((small, huge)))
        .join()
        .expect("the dropping thread");
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.live_class_bytes, s.slab_frees), (0, 0, 1));
    // The 5120 B class's slab stays: 409 whole blocks of a 2 MiB slab.
    assert_eq!(pool.with_source(|src| src.reserved_bytes()), 409 * 5120);
    assert_eq!(
        pool.alloc(4097)?.addr(),
        addr,
        "reused after the remote drop"
    );
    Ok(())
}

#[test]
fn threads_sharing_one_pool_keep_the_books_consistent() -> Result<(), PoolError> {
    let pool = SharedPool::new(HostAddressSpace::new());
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (pool, start) = (pool.clone(), Arc::clone(&start));
            std::thread::spawn(move || -> Result<Vec<OwnedBlock>, PoolError> {
                start.wait();
                let mut kept = Vec::new();
                for i in 0..1000usize {
                    let b = pool.alloc(256 + (i * 37 + t * 101) % 20_000)?;
                    if i % 10 == 0 {
                        kept.push(b); // moved out to the joining thread
                    }
                }
                Ok(kept)
            })
        })
        .collect();
    let mut kept = Vec::new();
    for w in workers {
        kept.extend(w.join().expect("worker")?);
    }
    let s = pool.stats();
    assert_eq!(s.hits + s.misses, 4000);
    assert_eq!(s.live_blocks, 400);
    assert_eq!(
        s.live_class_bytes,
        kept.iter().map(|b| b.class_bytes()).sum()
    );
    let mut addrs: Vec<u64> = kept.iter().map(|b| b.addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 400, "no two live blocks share an address");
    drop(kept);
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.trim(), s.reserved_bytes);
    Ok(())
}

#[test]
fn slabs_go_back_when_the_last_handle_and_block_are_gone() -> Result<(), PoolError> {
    let probe = Probe::default();
    let pool = SharedPool::new(probe.clone());
    let block = pool.alloc(70_000)?;
    drop(pool.alloc(300)?);
    let reserved = pool.stats().reserved_bytes;
    drop(pool);
    assert!(reserved > 2 << 20, "two slabs");
    assert_eq!(
        probe.0.borrow().reserved_bytes(),
        reserved,
        "the block keeps the pool"
    );
    drop(block);
    let src = probe.0.borrow();
    assert_eq!((src.reserved_bytes(), src.invalid_frees()), (0, 0));
    assert_eq!(src.slab_allocs(), src.slab_frees());
    Ok(())
}

#[test]
fn reset_peak_restarts_from_the_current_state_as_pool_does() -> Result<(), PoolError> {
    let pool = SharedPool::new(HostAddressSpace::new());
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
    assert_eq!(pool.stats().peak_live_class_bytes, 4096);
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(Index),
    Trim,
    ResetPeak,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        50 => prop_oneof![1usize..=8192, 8193usize..=3 << 20].prop_map(Op::Alloc),
        44 => any::<Index>().prop_map(Op::Free),
        3 => Just(Op::Trim),
        3 => Just(Op::ResetPeak),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The same ops on a `Pool` and a `SharedPool`, each over its own (deterministic) address
    /// space, a limit making some allocations fail: same addresses, errors and stats throughout.
    #[test]
    fn shared_and_plain_pools_keep_identical_books(
        limit in (4usize << 20)..(24 << 20),
        ops in prop::collection::vec(op(), 1..600),
    ) {
        let config = PoolConfig::default().huge_threshold(1 << 20);
        let plain = Pool::with_config(HostAddressSpace::with_limit(limit), config).expect("valid");
        let shared = SharedPool::with_config(HostAddressSpace::with_limit(limit), config).expect("valid");
        let mut a: Vec<PoolBlock<'_>> = Vec::new();
        let mut b: Vec<OwnedBlock> = Vec::new();
        for op in &ops {
            match op {
                Op::Alloc(bytes) => match (plain.alloc(*bytes), shared.alloc(*bytes)) {
                    (Ok(x), Ok(y)) => {
                        prop_assert_eq!(
                            (x.addr(), x.class_bytes(), x.class()),
                            (y.addr(), y.class_bytes(), y.class())
                        );
                        a.push(x);
                        b.push(y);
                    }
                    (Err(x), Err(y)) => prop_assert_eq!(x, y),
                    (x, y) => {
                        return Err(TestCaseError::fail(format!("diverged: {x:?} vs {y:?}")));
                    }
                },
                Op::Free(i) if !a.is_empty() => {
                    let k = i.index(a.len());
                    drop(a.swap_remove(k));
                    drop(b.swap_remove(k));
                }
                Op::Free(_) => {}
                Op::Trim => prop_assert_eq!(plain.trim(), shared.trim()),
                Op::ResetPeak => {
                    plain.reset_peak();
                    shared.reset_peak();
                }
            }
            prop_assert_eq!(plain.stats(), shared.stats());
        }
        prop_assert!(plain.stats().peak_live_class_bytes >= plain.stats().live_class_bytes);
    }
}
