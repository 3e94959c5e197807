//! `CompatPool` (src/compat.rs) against the original's rules and the design's totals.

use muse_pool::compat::{CompatConfig, CompatPool, Served};
use muse_pool::{HostAddressSpace, PoolError};
use rstest::rstest;

const MIB: usize = 1 << 20;

fn pool(initial_mib: usize, max_mib: usize) -> CompatPool {
    CompatPool::new(
        HostAddressSpace::new(),
        CompatConfig::mib(initial_mib, max_mib),
    )
    .expect("unlimited source")
}

#[rstest]
#[case::target_256(256, 16, 208, &[4, 4, 3, 2, 3])]
#[case::target_32(32, 4, 24, &[2, 2])]
#[case::target_64(64, 7, 60, &[3, 2, 2])]
fn preallocation_matches_the_design_totals(
    #[case] target_mib: usize,
    #[case] blocks: usize,
    #[case] total_mib: usize,
    #[case] per_shape: &[usize],
) {
    let p = pool(target_mib, 1024);
    let s = p.stats();
    println!(
        "compat target {target_mib} MiB: {} blocks, {} MiB",
        s.blocks,
        s.total_allocated_bytes / MIB
    );
    assert_eq!(
        (s.blocks, s.total_allocated_bytes),
        (blocks, total_mib * MIB)
    );
    assert_eq!(s.peak_allocated_bytes, total_mib * MIB);
    let got: Vec<usize> = p.blocks_per_shape().iter().map(|(_, n)| *n).collect();
    assert_eq!(&got[..], per_shape);
    assert_eq!(s.fragmentation_ratio, 1.0); // the original's metric when idle
}

#[test]
fn shapes_are_the_originals_4_8_16_32_16_mib() {
    let p = pool(256, 1024);
    let bytes: Vec<usize> = p
        .blocks_per_shape()
        .iter()
        .map(|(s, _)| s.iter().product::<usize>() * 2 / MIB)
        .collect();
    assert_eq!(bytes, [4, 8, 16, 32, 16]);
}

#[test]
fn the_originals_test_hits_with_a_64_mib_pool() {
    let mut p = pool(64, 256);
    for _ in 0..10 {
        let t = p.alloc(&[4, 8, 1024, 64]).expect("hit");
        assert_eq!(t.served(), Served::Exact);
        p.dealloc(t);
    }
    let s = p.stats();
    assert!(s.cache_hits >= 1);
    assert_eq!(
        (s.allocations, s.deallocations, s.cache_hits, s.cache_misses),
        (10, 10, 10, 0)
    );
}

#[test]
fn exact_then_first_fit_view_then_new_block() {
    let mut p = pool(32, 40); // 2 × 4 MiB, 2 × 8 MiB = 24 MiB; max 40 MiB
    let a = p.alloc(&[4, 8, 1024, 64]).expect("exact");
    let b = p.alloc(&[4, 8, 1024, 64]).expect("exact");
    assert_eq!((a.served(), b.served()), (Served::Exact, Served::Exact));
    // Exact pool empty: the first pool in insertion order with numel ≥ request, a view of 8 MiB.
    let c = p.alloc(&[4, 8, 1024, 64]).expect("view");
    assert_eq!(c.served(), Served::View);
    // First fit, not best fit: 1 element takes an 8 MiB block.
    let d = p.alloc(&[1]).expect("view");
    assert_eq!(d.served(), Served::View);
    let s = p.stats();
    assert_eq!((s.in_use_bytes, s.fragmentation_ratio), (24 * MIB, 0.0));
    // Nothing idle: a new pooled block (24 + 16 ≤ 40), then an unpooled one (40 + 16 > 40).
    let e = p.alloc(&[4, 8, 4096, 64]).expect("new");
    let f = p.alloc(&[4, 8, 4096, 64]).expect("new");
    assert_eq!(
        (e.served(), f.served()),
        (Served::NewPooled, Served::Unpooled)
    );
    let s = p.stats();
    assert_eq!(
        (
            s.total_allocated_bytes,
            s.blocks,
            s.cache_misses,
            s.cache_hits
        ),
        (40 * MIB, 5, 2, 4)
    );
    for t in [a, b, c, d, e, f] {
        p.dealloc(t);
    }
    let s = p.stats();
    assert_eq!(
        (
            s.in_use_bytes,
            s.fragmentation_ratio,
            s.peak_allocated_bytes
        ),
        (0, 1.0, 40 * MIB)
    );
    // The new shape's pool now serves exact hits.
    assert_eq!(
        p.alloc(&[4, 8, 4096, 64]).map(|t| t.served()),
        Ok(Served::Exact)
    );
}

#[test]
fn fragmentation_is_the_idle_fraction() {
    let mut p = pool(32, 1024);
    let t = p.alloc(&[4, 8, 2048, 64]).expect("exact"); // 8 of 24 MiB in use
    assert!((p.stats().fragmentation_ratio - 2.0 / 3.0).abs() < 1e-12);
    p.dealloc(t);
}

#[test]
fn errors_are_errors_not_panics() {
    let mut src_limited = CompatPool::new(
        HostAddressSpace::with_limit(20 * MIB),
        CompatConfig::mib(32, 1024),
    );
    assert!(matches!(src_limited, Err(PoolError::OutOfMemory { .. })));
    src_limited = CompatPool::new(
        HostAddressSpace::new(),
        CompatConfig {
            elem_bytes: 0,
            ..CompatConfig::default()
        },
    );
    assert!(matches!(
        src_limited,
        Err(PoolError::Invalid {
            name: "elem_bytes",
            ..
        })
    ));
    let empty = CompatConfig {
        shapes: vec![vec![4, 0]],
        ..CompatConfig::default()
    };
    let err = CompatPool::new(HostAddressSpace::new(), empty)
        .err()
        .expect("empty shape");
    assert!(err.to_string().contains("`shapes`"), "{err}");
    let mut p = pool(32, 1024);
    assert!(p.alloc(&[usize::MAX, 2]).is_err());
    let mut tiny = CompatPool::new(
        HostAddressSpace::with_limit(24 * MIB),
        CompatConfig::mib(32, 1024),
    )
    .expect("fits");
    let busy: Vec<_> = (0..4)
        .map(|_| tiny.alloc(&[4, 8, 1024, 64]).expect("hit or view"))
        .collect();
    assert!(matches!(
        tiny.alloc(&[4, 8, 1024, 64]),
        Err(PoolError::OutOfMemory { .. })
    ));
    for t in busy {
        tiny.dealloc(t);
    }
    assert!(tiny.alloc(&[4, 8, 1024, 64]).is_ok());
}
