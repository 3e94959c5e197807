//! The 4-bit KV cache's KPIs (design hyperbolic.md §4.5; seed 000 task 33.1, the original's
//! `benchmark_memory_optimizations.py` long-context rows): the effective compression ratio from
//! the stored bytes (≥ 3.5× at D = 64 with fp16 metadata; payload 4×), and decode attention from
//! the 4-bit cache against the fp16 cache in the same process (≥ 2.5× faster at context ≥ 8192),
//! B ∈ {1, 4}, H = 8, D = 64, one new query per sequence, causal. Each cache is timed with and
//! without the next key's prefetch (design §7: a schedule stays only where it gains); the fp16
//! baseline is the faster of its two. `speedup_ceiling_vs_fp16_cache` is the ratio the 4-bit cache
//! would reach if its decode cost only its fixed part (its time at the shortest context), and
//! `launch_floor` the protocol's floor for any launch (crate::records::launch_floor).

use muse_reference::kv4::{effective_ratio, payload_ratio, Kv4Cache, Kv4Config, KvLayout};
use muse_verify::report::Site;
use muse_verify::Target;

use crate::{CpuCtx, Family, Plot, Result};

/// The kv4 family.
pub struct Kv4Family;

/// Contexts of the decode rows.
#[cfg(feature = "cuda")]
const CONTEXTS: [usize; 5] = [1024, 2048, 4096, 8192, 16384];
/// The original's benchmark, so a reader can map the rows.
const ORIGINAL: &str = "benchmark_memory_optimizations.py";

/// The decode rows' site: one case and shape per (B, N), the storage and schedule as the dtype.
#[cfg(feature = "cuda")]
fn decode_site<'a>(case: &'a str, shape: &'a [usize], dtype: &'a str) -> Site<'a> {
    Site {
        kernel: "kv4_decode",
        backend: "cuda",
        case,
        shape,
        dtype,
    }
}

fn cfg(batch: usize, context: usize) -> Kv4Config {
    Kv4Config {
        batch,
        heads: 8,
        dim: 64,
        capacity: context,
        layout: KvLayout::PerToken,
        radial: false,
        ring: false,
    }
}

impl Family for Kv4Family {
    fn stem(&self) -> &'static str {
        "kv4"
    }

    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        for d in [64, 128] {
            let c = Kv4Config {
                dim: d,
                ..cfg(1, 1024)
            };
            let cache = Kv4Cache::new(c)?;
            let fp16 = 2 * 2 * c.batch * c.heads * c.capacity * d;
            let case = format!("{ORIGINAL}/state_H8_T1024_D{d}");
            let site = Site {
                kernel: "kv4_cache",
                backend: "cpu",
                case: &case,
                shape: &[1, 8, 1024, d],
                dtype: "int4",
            };
            let measured = fp16 as f64 / cache.state_bytes() as f64;
            ctx.report.records.push(site.record(
                "effective_ratio_vs_fp16",
                measured,
                "x",
                Some(Target::AtLeast(if d == 64 { 3.5 } else { 3.7 })),
            ));
            ctx.report.records.push(site.record(
                "effective_ratio_formula_gap",
                (measured - effective_ratio(d, 2)).abs(),
                "x",
                Some(Target::AtMost(1e-12)),
            ));
            ctx.report
                .records
                .push(site.record("payload_ratio", payload_ratio(), "x", None));
            ctx.report.records.push(site.record(
                "original_formula_ratio_fp32_meta",
                effective_ratio(d, 4),
                "x",
                None,
            ));
        }
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::kv4::{DecodeWs, DeviceKvCache, Storage};
        use muse_reference::hyp_attn::Mask;
        use muse_verify::plot::Series;

        use crate::records::{event_timing, speedup};
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        let (_, floor) = crate::records::launch_floor(gpu, ctx.runs, "int4")?;
        ctx.report.records.extend(floor);
        let mut series = Vec::new();
        for batch in [1, 4] {
            let (mut int4_pts, mut fp16_pts) = (Vec::new(), Vec::new());
            // the 4-bit decode's time at the shortest context: its fixed cost under the protocol
            let mut int4_fixed_us = None;
            for n in CONTEXTS {
                let c = cfg(batch, n);
                let mut caches = Vec::new();
                for storage in [Storage::Int4, Storage::Fp16] {
                    let mut cache = DeviceKvCache::new(gpu, c, storage)?;
                    let kv: Vec<f32> = (0..batch * 8 * n * 64)
                        .map(|i| ((i * 2_654_435_761) % 1000) as f32 * 1e-3 - 0.5)
                        .collect();
                    let kd = gpu.upload(&kv)?;
                    cache.append(gpu, &kd, &kd, n)?;
                    caches.push(cache);
                }
                let q = gpu.upload(&vec![0.05f32; batch * 8 * 64])?;
                let case = format!("{ORIGINAL}/decode_B{batch}_H8_N{n}_D64");
                let shape = [batch, 8, n, 64];
                // [int4, fp16] × [prefetch, none]: §7 keeps the prefetch only where it gains
                let mut times = [[0.0; 2]; 2];
                for (ci, cache) in caches.iter().enumerate() {
                    for (pi, prefetch) in [true, false].into_iter().enumerate() {
                        let mut ws = DecodeWs::new(gpu, cache, 1)?.with_prefetch(prefetch);
                        cache.decode(gpu, &q, 1, 0.693, 1.0, Mask::Causal, &mut ws)?;
                        let t = time_events(gpu, 5, ctx.runs, || {
                            cache.decode(gpu, &q, 1, 0.693, 1.0, Mask::Causal, &mut ws)
                        })?;
                        // the storage's default schedule under its plain name
                        let default = DecodeWs::default_prefetch(cache.storage());
                        let name = match (cache.storage() == Storage::Int4, prefetch == default) {
                            (true, true) => "int4",
                            (true, false) => "int4_prefetch",
                            (false, true) => "fp16",
                            (false, false) => "fp16_no_prefetch",
                        };
                        let site = decode_site(&case, &shape, name);
                        ctx.report.records.extend(event_timing(&site, &t, None));
                        if prefetch == default {
                            ctx.report.records.push(site.record(
                                "state_bytes",
                                cache.state_bytes() as f64,
                                "bytes",
                                None,
                            ));
                        }
                        times[ci][pi] = t.median_us;
                    }
                    let site = decode_site(&case, &shape, if ci == 0 { "int4" } else { "fp16" });
                    ctx.report.records.push(speedup(
                        &site,
                        "prefetch_speedup",
                        times[ci][1],
                        times[ci][0],
                    ));
                }
                // int4 at its default schedule against the faster fp16 schedule
                let int4_default = usize::from(!DecodeWs::default_prefetch(Storage::Int4));
                let (int4_us, fp16_us) = (times[0][int4_default], times[1][0].min(times[1][1]));
                let site = decode_site(&case, &shape, "int4");
                let mut rec = speedup(&site, "speedup_vs_fp16_cache", fp16_us, int4_us);
                if n >= 8192 {
                    rec = site.goal(
                        "speedup_vs_fp16_cache",
                        rec.value,
                        "x",
                        Target::AtLeast(2.5),
                    );
                }
                ctx.report.records.push(rec);
                // what the ratio would be if the 4-bit decode cost only its fixed part
                let fixed = *int4_fixed_us.get_or_insert(int4_us);
                ctx.report.records.push(speedup(
                    &site,
                    "speedup_ceiling_vs_fp16_cache",
                    fp16_us,
                    fixed,
                ));
                ctx.report.records.push(site.goal(
                    "effective_ratio_vs_fp16",
                    caches[1].state_bytes() as f64 / caches[0].state_bytes() as f64,
                    "x",
                    Target::AtLeast(3.5),
                ));
                int4_pts.push((n as f64, int4_us));
                fp16_pts.push((n as f64, fp16_us));
            }
            series.push(Series {
                label: format!("4-bit cache, B{batch}"),
                points: int4_pts,
            });
            series.push(Series {
                label: format!("fp16 cache, B{batch}"),
                points: fp16_pts,
            });
        }
        Ok(Some(Plot {
            title: "KV-cache decode attention (H 8, D 64, one query, causal)".into(),
            unit: "us",
            series,
        }))
    }
}
