//! proptest (src/pool.rs): 10⁵ random ops against an independent model of the pool's contract.
//!
//! The model knows the class list (written out here, not `class_of`), keeps per-class LIFO
//! stacks of freed addresses, and the live blocks. It predicts hit/miss, the reused address,
//! every count and byte sum; the source (`HostAddressSpace`) checks containment and reserved
//! bytes independently of the pool's own books.

use std::collections::{BTreeMap, HashMap};

use muse_pool::{HostAddressSpace, Pool, PoolBlock, PoolConfig, PoolError, PoolStats};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(Index),
    Trim,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        5 => 1usize..=4096,
        3 => 4097usize..=262_144,
        2 => 262_145usize..=8 << 20,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        55 => size().prop_map(Op::Alloc),
        44 => any::<Index>().prop_map(Op::Free),
        1 => Just(Op::Trim),
    ]
}

fn config() -> impl Strategy<Value = PoolConfig> {
    prop_oneof![
        Just(PoolConfig::default()),
        Just(
            PoolConfig::default()
                .slab_bytes(64 << 10)
                .huge_threshold(1 << 20)
        ),
        Just(
            PoolConfig::default()
                .slab_bytes(256)
                .huge_threshold(4 << 20)
        ),
    ]
}

/// Class bytes of a pooled request, from the written-out list 2ⁿ·{1, 1.25, 1.5, 1.75}.
fn model_class(bytes: usize) -> usize {
    let mut octave = 256usize;
    loop {
        for q in [4, 5, 6, 7, 8] {
            if octave / 4 * q >= bytes {
                return octave / 4 * q;
            }
        }
        octave *= 2;
    }
}

#[derive(Default)]
struct Model {
    free: HashMap<usize, Vec<u64>>,
    live: BTreeMap<u64, (usize, usize)>, // addr -> (requested, class bytes)
    requested: usize,
    class_bytes: usize,
    peak_class: usize,
    peak_reserved: usize,
    hits: u64,
    misses: u64,
    failed: u64,
}

struct Harness<'p> {
    pool: &'p Pool,
    huge: usize,
    model: Model,
    blocks: Vec<PoolBlock<'p>>,
}

impl<'p> Harness<'p> {
    fn alloc(&mut self, bytes: usize) -> Result<(), TestCaseError> {
        let dedicated = bytes > self.huge;
        let class = if dedicated {
            bytes.next_multiple_of(256)
        } else {
            model_class(bytes)
        };
        let expect_hit = !dedicated && self.model.free.get(&class).is_some_and(|s| !s.is_empty());
        let before = self.pool.stats();
        let block = match self.pool.alloc(bytes) {
            Ok(b) => b,
            Err(e) => {
                prop_assert!(!expect_hit, "a hit failed: {e}");
                let PoolError::OutOfMemory {
                    requested,
                    slab_bytes,
                    reserved_bytes,
                    limit,
                } = e
                else {
                    return Err(TestCaseError::fail(format!("unexpected error {e}")));
                };
                prop_assert_eq!(requested, bytes);
                prop_assert!(limit.is_some_and(|l| reserved_bytes + slab_bytes > l));
                self.model.failed += 1;
                let after = self.pool.stats();
                prop_assert_eq!(
                    after,
                    PoolStats {
                        failed_allocs: before.failed_allocs + 1,
                        ..before
                    }
                );
                return Ok(());
            }
        };
        let addr = block.addr();
        prop_assert_eq!(addr % 256, 0);
        prop_assert_eq!((block.requested(), block.class_bytes()), (bytes, class));
        prop_assert_eq!(block.is_dedicated(), dedicated);
        if expect_hit {
            let top = self.model.free.get_mut(&class).and_then(|s| s.pop());
            prop_assert_eq!(Some(addr), top, "LIFO reuse");
            self.model.hits += 1;
        } else {
            self.model.misses += 1;
        }
        // Inside one live slab of the source; no overlap with any live block.
        let inside = self.pool.with_source(|s| s.slab_containing(addr, class));
        prop_assert!(
            inside.is_some(),
            "block {addr:#x}+{class} outside every slab"
        );
        if let Some((&a, &(_, c))) = self.model.live.range(..addr).next_back() {
            prop_assert!(a + c as u64 <= addr, "overlaps {a:#x}+{c}");
        }
        if let Some((&a, _)) = self.model.live.range(addr..).next() {
            prop_assert!(addr + class as u64 <= a, "overlaps {a:#x}");
        }
        self.model.live.insert(addr, (bytes, class));
        self.model.requested += bytes;
        self.model.class_bytes += class;
        self.model.peak_class = self.model.peak_class.max(self.model.class_bytes);
        self.blocks.push(block);
        Ok(())
    }

    fn free(&mut self, i: Index) {
        if self.blocks.is_empty() {
            return;
        }
        let block = self.blocks.swap_remove(i.index(self.blocks.len()));
        let (addr, dedicated) = (block.addr(), block.is_dedicated());
        let (req, class) = self
            .model
            .live
            .remove(&addr)
            .expect("model knows the block");
        drop(block);
        self.model.requested -= req;
        self.model.class_bytes -= class;
        if !dedicated {
            self.model.free.entry(class).or_default().push(addr);
        }
    }

    fn trim(&mut self) {
        self.pool.trim();
        // Freed blocks of returned slabs are gone; the rest keep their order.
        for stack in self.model.free.values_mut() {
            stack.retain(|&a| {
                self.pool
                    .with_source(|s| s.slab_containing(a, 256).is_some())
            });
        }
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let s = self.pool.stats();
        let m = &mut self.model;
        let (reserved, slab_allocs, slab_frees) = self
            .pool
            .with_source(|src| (src.reserved_bytes(), src.slab_allocs(), src.slab_frees()));
        m.peak_reserved = m.peak_reserved.max(reserved);
        prop_assert_eq!(s.live_blocks, m.live.len());
        prop_assert_eq!(s.live_requested_bytes, m.requested);
        prop_assert_eq!(s.live_class_bytes, m.class_bytes);
        prop_assert_eq!(
            (s.hits, s.misses, s.failed_allocs),
            (m.hits, m.misses, m.failed)
        );
        prop_assert_eq!(
            (s.reserved_bytes, s.slab_allocs, s.slab_frees),
            (reserved, slab_allocs, slab_frees)
        );
        prop_assert_eq!(s.idle_reserved_bytes, reserved - m.class_bytes);
        prop_assert_eq!(
            (s.peak_live_class_bytes, s.peak_reserved_bytes),
            (m.peak_class, m.peak_reserved)
        );
        prop_assert!(s.slab_allocs <= s.misses);
        let want = if m.class_bytes == 0 {
            0.0
        } else {
            1.0 - m.requested as f64 / m.class_bytes as f64
        };
        prop_assert!((s.internal_fragmentation() - want).abs() < 1e-12);
        if m.live.values().all(|&(r, _)| r >= 256) {
            prop_assert!(s.internal_fragmentation() < 0.2);
        }
        Ok(())
    }

    fn check_all_inside(&self) -> Result<(), TestCaseError> {
        for (&a, &(_, c)) in &self.model.live {
            prop_assert!(self.pool.with_source(|s| s.slab_containing(a, c).is_some()));
        }
        for (&c, stack) in &self.model.free {
            for &a in stack {
                prop_assert!(self.pool.with_source(|s| s.slab_containing(a, c).is_some()));
            }
        }
        Ok(())
    }
}

fn run(pool: &Pool, huge: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness {
        pool,
        huge,
        model: Model::default(),
        blocks: Vec::new(),
    };
    for (k, op) in ops.iter().enumerate() {
        match op {
            Op::Alloc(bytes) => h.alloc(*bytes)?,
            Op::Free(i) => h.free(*i),
            Op::Trim => h.trim(),
        }
        h.check()?;
        if k % 1000 == 999 {
            h.check_all_inside()?;
        }
    }
    h.check_all_inside()?;
    h.blocks.clear();
    prop_assert_eq!(pool.stats().live_blocks, 0);
    Ok(())
}

proptest! {
    // 8 cases × 12 500 ops = 10⁵ ops.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_match_the_model(config in config(), ops in prop::collection::vec(op(), 12_500)) {
        let pool = Pool::with_config(HostAddressSpace::new(), config).expect("valid config");
        run(&pool, config.huge_threshold, &ops)?;
        prop_assert_eq!(pool.stats().failed_allocs, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn out_of_memory_is_an_error_and_the_pool_stays_usable(
        config in config(),
        limit in (4usize << 20)..(64 << 20),
        ops in prop::collection::vec(op(), 1_000),
    ) {
        let pool = Pool::with_config(HostAddressSpace::with_limit(limit), config).expect("valid config");
        run(&pool, config.huge_threshold, &ops)?;
        // Usable after any failures: a small request still succeeds once everything is back.
        pool.trim();
        prop_assert!(pool.alloc(300).is_ok());
    }

    #[test]
    fn free_then_alloc_of_the_same_class_reuses_the_address(
        sizes in prop::collection::vec(size(), 1..64),
        order in prop::collection::vec(any::<Index>(), 64),
        again in 0usize..64,
    ) {
        let pool = Pool::new(HostAddressSpace::new());
        let mut blocks: Vec<_> = sizes.iter().map(|&b| pool.alloc(b).expect("unlimited")).collect();
        let mut last_freed: HashMap<usize, u64> = HashMap::new();
        for i in order.iter().take(blocks.len()) {
            let b = blocks.swap_remove(i.index(blocks.len()));
            last_freed.insert(b.class_bytes(), b.addr());
        }
        let size = sizes[again % sizes.len()];
        let b = pool.alloc(size).expect("unlimited");
        if let Some(&addr) = last_freed.get(&b.class_bytes()) {
            prop_assert_eq!(b.addr(), addr);
            prop_assert_eq!(pool.stats().hits, 1);
        }
    }
}
