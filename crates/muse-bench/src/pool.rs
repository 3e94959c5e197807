//! The memory pool's KPIs (design hyperbolic.md §10, seed 000 task 33.2, the original's
//! `src/kernels/memory_pool_triton.py`): alloc+free latency of hits (median < 1 µs, p99 < 2 µs
//! over 10⁶ pairs), internal fragmentation on the LM attention trace (< 20 %), with the original's
//! metric (idle / reserved) beside it and the original pool's preallocation totals for parity.
//! The CPU rows use virtual address ranges; the CUDA rows the same host code over device slabs
//! (the hit path never reaches the driver).

use muse_pool::compat::{CompatConfig, CompatPool};
use muse_pool::trace::{attention_trace, protocol_shapes, replay, TraceOptions};
use muse_pool::{time_alloc_free_pairs, HostAddressSpace, Pool, SlabSource};
use muse_verify::report::Site;
use muse_verify::Target;

use crate::{CpuCtx, Family, Plot, Result};

/// The pool family.
pub struct PoolFamily;

/// Request sizes of the latency rows: an lse row, a small tile, a window's K, a layer's Q.
const SIZES: [usize; 4] = [256, 4096, 1 << 20, 16 << 20];
/// alloc+free pairs per size (the design's 10⁶).
const PAIRS: usize = 1_000_000;
/// The original's name, so a reader can map the rows.
const ORIGINAL: &str = "memory_pool_triton.py";

/// Latency, trace fragmentation and (on the host) the compat totals, into `records`.
fn measure<S: SlabSource>(
    backend: &'static str,
    pool: &Pool<S>,
    records: &mut Vec<muse_verify::Record>,
    compat: bool,
) -> Result<()> {
    for bytes in SIZES {
        let t = time_alloc_free_pairs(pool, bytes, PAIRS)?;
        let case = format!("alloc_free_hit_{bytes}B");
        let site = Site {
            kernel: "pool",
            backend,
            case: &case,
            shape: &[bytes, PAIRS],
            dtype: "u8",
        };
        records.push(site.record(
            "median_ns_per_pair",
            t.median_ns,
            "ns",
            Some(Target::Below(1000.0)),
        ));
        records.push(site.record(
            "p99_ns_per_pair",
            t.p99_ns,
            "ns",
            Some(Target::Below(2000.0)),
        ));
        records.push(site.record("single_pair_p99_ns", t.single_p99_ns, "ns", None));
        records.push(site.record(
            "all_hits",
            f64::from(u8::from(t.all_hits)),
            "",
            Some(Target::AtLeast(1.0)),
        ));
    }
    for (name, ragged) in [("protocol", None), ("ragged_seed1", Some(1))] {
        let opts = TraceOptions {
            ragged_seed: ragged,
            ..TraceOptions::default()
        };
        let events = attention_trace(&protocol_shapes(), opts);
        pool.trim();
        let r = replay(pool, &events)?;
        let case = format!("attention_trace_{name}");
        let site = Site {
            kernel: "pool",
            backend,
            case: &case,
            shape: &[r.events],
            dtype: "f32+bf16",
        };
        records.push(site.record(
            "max_internal_fragmentation",
            r.max_fragmentation,
            "",
            Some(Target::Below(0.2)),
        ));
        records.push(site.record(
            "mean_internal_fragmentation",
            r.mean_fragmentation,
            "",
            None,
        ));
        records.push(site.record(
            "original_metric_mean_idle_fraction",
            r.mean_idle_fraction,
            "",
            None,
        ));
        records.push(site.record(
            "peak_reserved_bytes",
            r.peak_reserved_bytes as f64,
            "bytes",
            None,
        ));
        records.push(site.record(
            "peak_live_requested_bytes",
            r.peak_live_requested_bytes as f64,
            "bytes",
            None,
        ));
        pool.trim();
    }
    if compat {
        for (target, want) in [(256usize, 208u32), (32, 24), (64, 60)] {
            let p = CompatPool::new(HostAddressSpace::new(), CompatConfig::mib(target, 1024))?;
            let case = format!("{ORIGINAL}/target_{target}MiB");
            let site = Site {
                kernel: "pool_compat",
                backend,
                case: &case,
                shape: &[target],
                dtype: "f16",
            };
            let got = p.stats().total_allocated_bytes as f64 / f64::from(1u32 << 20);
            records.push(site.record("preallocated_mib", got, "MiB", None));
            // parity with the original's constants (design §10: 208 / 24 / 60 MiB)
            records.push(site.record(
                "preallocated_mib_minus_original",
                (got - f64::from(want)).abs(),
                "MiB",
                Some(Target::AtMost(0.0)),
            ));
            records.push(site.record(
                "original_fragmentation_idle",
                p.stats().fragmentation_ratio,
                "",
                None,
            ));
        }
    }
    Ok(())
}

impl Family for PoolFamily {
    fn stem(&self) -> &'static str {
        "pool"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        let pool = Pool::new(HostAddressSpace::new());
        measure("host", &pool, &mut ctx.report.records, true)?;
        ctx.report.meta.insert("pool_method".into(), "alloc+free hit pairs timed in batches of 64 (muse_pool::timing); the host rows hand out virtual address ranges".into());
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        let pool = Pool::new(muse_cuda::pool::DeviceSlabs::new(ctx.gpu));
        ctx.gpu.reset_peak();
        measure("cuda", &pool, &mut ctx.report.records, false)?;
        let site = Site {
            kernel: "pool",
            backend: "cuda",
            case: "attention_trace_device_peak",
            shape: &[],
            dtype: "u8",
        };
        ctx.report.records.push(site.record(
            "device_alloc_peak_bytes",
            ctx.gpu.peak_bytes() as f64,
            "bytes",
            None,
        ));
        Ok(None)
    }
}
