//! The attention workload trace (src/trace.rs) and the hit-pair timing (src/timing.rs).
//! Numbers are printed (`cargo test -p muse-pool -- --nocapture`); speed is never asserted.

use std::collections::HashSet;

use muse_pool::trace::{self, AttnShape, Dtype, TraceEvent, TraceOptions};
use muse_pool::{time_alloc_free_pairs, HostAddressSpace, Pool, PoolError};

/// Every id is allocated once, then freed once; nothing is left live.
fn assert_balanced(events: &[TraceEvent]) {
    let (mut live, mut seen) = (HashSet::new(), HashSet::new());
    for e in events {
        match *e {
            TraceEvent::Alloc { id, bytes, .. } => {
                assert!(
                    bytes >= 256 && seen.insert(id) && live.insert(id),
                    "alloc {id}"
                );
            }
            TraceEvent::Free { id } => assert!(live.remove(&id), "free {id}"),
        }
    }
    assert!(live.is_empty());
}

fn print(label: &str, r: &trace::TraceReport) {
    println!(
        "{label}: {} events, frag max {:.4} mean {:.4}, idle (original's metric) mean {:.3}, \
         hits {} misses {} slabs {}, peak live {:.1} MiB requested / {:.1} MiB class, reserved {:.1} MiB",
        r.events,
        r.max_fragmentation,
        r.mean_fragmentation,
        r.mean_idle_fraction,
        r.hits,
        r.misses,
        r.slab_allocs,
        r.peak_live_requested_bytes as f64 / 1048576.0,
        r.peak_live_class_bytes as f64 / 1048576.0,
        r.peak_reserved_bytes as f64 / 1048576.0,
    );
}

#[test]
fn protocol_trace_fragmentation_is_below_20_percent() -> Result<(), PoolError> {
    let events = trace::attention_trace(&trace::protocol_shapes(), TraceOptions::default());
    assert_balanced(&events);
    let pool = Pool::new(HostAddressSpace::new());
    let r = trace::replay(&pool, &events)?;
    print("protocol trace (T = N)", &r);
    assert!(r.max_fragmentation < 0.2 && r.mean_fragmentation <= r.max_fragmentation);
    assert_eq!(r.hits + r.misses, r.allocs as u64);
    assert!(r.hits > 0);
    assert_eq!(pool.stats().live_blocks, 0);
    Ok(())
}

#[test]
fn ragged_trace_fragmentation_is_below_20_percent() -> Result<(), PoolError> {
    for seed in [1, 2, 3] {
        let opts = TraceOptions {
            ragged_seed: Some(seed),
            ..TraceOptions::default()
        };
        let events = trace::attention_trace(&trace::protocol_shapes(), opts);
        assert_balanced(&events);
        let pool = Pool::new(HostAddressSpace::new());
        let r = trace::replay(&pool, &events)?;
        print(&format!("ragged trace (T in [N/2, N], seed {seed})"), &r);
        assert!(
            r.max_fragmentation < 0.2,
            "seed {seed}: {}",
            r.max_fragmentation
        );
        assert!(r.mean_fragmentation > 0.0);
    }
    Ok(())
}

#[test]
fn a_step_allocates_the_protocol_shapes() {
    let s = AttnShape {
        batch: 4,
        seq_len: 8192,
        heads: 8,
        head_dim: 128,
        dtype: Dtype::F32,
    };
    let events = trace::attention_trace(
        &[s],
        TraceOptions {
            layers: 1,
            steps: 1,
            ragged_seed: None,
        },
    );
    let sizes: Vec<(&str, usize)> = events
        .iter()
        .filter_map(|e| match *e {
            TraceEvent::Alloc { bytes, name, .. } => Some((name, bytes)),
            TraceEvent::Free { .. } => None,
        })
        .collect();
    // [B·N/64, 8, 64, 128] f32 = 128 MiB; lse [512, 8, 64] f32 = 1 MiB.
    assert_eq!(sizes[0], ("q", 128 << 20));
    assert!(sizes.contains(&("lse", 1 << 20)));
    assert_eq!(sizes.len(), 15);
}

#[test]
fn absurd_shapes_are_errors_not_overflows() {
    let s = AttnShape {
        batch: usize::MAX,
        seq_len: usize::MAX,
        heads: 8,
        head_dim: 128,
        dtype: Dtype::Bf16,
    };
    let events = trace::attention_trace(
        &[s],
        TraceOptions {
            layers: 1,
            steps: 1,
            ragged_seed: Some(9),
        },
    );
    assert!(trace::replay(&Pool::new(HostAddressSpace::new()), &events).is_err());
    let empty = AttnShape { seq_len: 0, ..s };
    let events = trace::attention_trace(&[empty], TraceOptions::default());
    assert_eq!(
        trace::replay(&Pool::new(HostAddressSpace::new()), &events).err(),
        Some(PoolError::ZeroSize)
    );
}

#[test]
fn replay_rejects_unknown_ids() {
    let pool = Pool::new(HostAddressSpace::new());
    let err = trace::replay(&pool, &[TraceEvent::Free { id: 7 }]).expect_err("dead id");
    assert!(err.to_string().starts_with("trace::replay: `id`"), "{err}");
    let twice = [TraceEvent::Alloc {
        id: 0,
        bytes: 1,
        name: "x",
    }; 2];
    assert!(trace::replay(&pool, &twice).is_err());
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn hit_pair_timings_are_reported() -> Result<(), PoolError> {
    let pool = Pool::new(HostAddressSpace::new());
    assert!(time_alloc_free_pairs(&pool, 256, 0).is_err());
    for bytes in [256, 4096, 1 << 20, 48 << 20] {
        let t = time_alloc_free_pairs(&pool, bytes, 1_000_000)?;
        println!(
            "alloc+free hit pair, {bytes} B: median {:.1} ns, p99 {:.1} ns, mean {:.1} ns (batches of {}); \
             one by one: median {:.1} ns, p99 {:.1} ns (clock read {:.1} ns); all hits: {}",
            t.median_ns, t.p99_ns, t.mean_ns, t.batch, t.single_median_ns, t.single_p99_ns,
            t.instant_overhead_ns, t.all_hits
        );
        assert!(t.all_hits);
    }
    Ok(())
}
