//! criterion: alloc+free hit pairs on a `HostAddressSpace` pool (src/pool.rs, src/timing.rs).
//!
//! Group `pool_alloc_free/host`, ids by request size. Each iteration allocates and drops one
//! block of a warmed-up class, so every pair is a free-list hit.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use muse_pool::{HostAddressSpace, Pool};

fn alloc_free_hit_pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_alloc_free/host");
    group.throughput(Throughput::Elements(1));
    for (id, bytes) in [
        ("256B", 256),
        ("4KiB", 4096),
        ("1MiB", 1 << 20),
        ("48MiB", 48 << 20),
    ] {
        let pool = Pool::new(HostAddressSpace::new());
        drop(pool.alloc(bytes).expect("unlimited source"));
        group.bench_with_input(BenchmarkId::from_parameter(id), &bytes, |b, &bytes| {
            b.iter(|| black_box(pool.alloc(black_box(bytes)).expect("a hit")))
        });
    }
    group.finish();
}

criterion_group!(benches, alloc_free_hit_pairs);
criterion_main!(benches);
