//! GPU timing with CUDA events (design toolchain §5): warm-up, an L2 flush before every repeat,
//! one event pair per repeat around the queued work only, one synchronisation at the end.

use cust::event::{Event, EventFlags};
use muse_reference::Result;

use crate::device::{err, k, Buf, Gpu};
use crate::lazy::LazyModule;

static MODULE: LazyModule = LazyModule::new(k::timing::CUBIN, "timing");

/// Median and spread of repeated event timings, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct EventTiming {
    /// Median.
    pub median_us: f64,
    /// 20th percentile.
    pub p20_us: f64,
    /// 80th percentile.
    pub p80_us: f64,
    /// Fastest repeat.
    pub min_us: f64,
    /// Repeats.
    pub runs: usize,
}

/// Times `work` (which only queues launches on `gpu.stream`) `runs` times after `warmup` calls,
/// flushing L2 (a memset of twice its size) before each repeat, outside the event pair. With
/// `MUSE_TIMING_FLUSH=read` the flush reads that buffer instead (`timing_read_flush`), leaving L2
/// full of clean lines rather than dirty ones: an experiment on what the memset's write-back costs
/// the timed kernel; the committed reports use the memset.
pub fn time_events(
    gpu: &'static Gpu,
    warmup: usize,
    runs: usize,
    mut work: impl FnMut() -> Result<()>,
) -> Result<EventTiming> {
    let mut flush: Buf<u8> = gpu.alloc(2 * gpu.info().l2_bytes.max(1 << 20))?;
    for _ in 0..warmup {
        work()?;
    }
    gpu.sync("warm-up")?;
    let new_event = || Event::new(EventFlags::DEFAULT).map_err(|e| err("creating an event", e));
    let mut pairs = Vec::with_capacity(runs);
    let read_flush = std::env::var("MUSE_TIMING_FLUSH").is_ok_and(|v| v == "read");
    // the read flush's kernel and the one word it may write (the memset flush needs neither)
    let reader = if read_flush {
        flush.fill_async(1)?;
        let func = gpu.function(MODULE.get(gpu)?, k::timing::READ_FLUSH)?;
        Some((func, gpu.alloc::<u32>(1)?))
    } else {
        None
    };
    for i in 0..runs {
        match &reader {
            Some((func, sink)) => {
                let stream = &gpu.stream;
                let n16 = (flush.len() / 16) as i64;
                // SAFETY: (1) three arguments in C order (const uint4*, long long, unsigned*);
                // (2) flush holds 16·n16 bytes or more (cuMemAlloc alignment covers uint4), sink
                // one u32; (3) both outlive the timed runs (synchronised below).
                unsafe {
                    cust::launch!(func<<<gpu.info().sms * 4, 256, 0, stream>>>(
                        flush.ptr(), n16, sink.ptr()
                    ))
                }
                .map_err(|e| err("launching timing_read_flush", e))?;
            }
            None => flush.fill_async((i % 251) as u8)?,
        }
        let (start, stop) = (new_event()?, new_event()?);
        start
            .record(&gpu.stream)
            .map_err(|e| err("recording an event", e))?;
        work()?;
        stop.record(&gpu.stream)
            .map_err(|e| err("recording an event", e))?;
        pairs.push((start, stop));
    }
    gpu.sync("timed runs")?;
    let mut us = Vec::with_capacity(runs);
    for (start, stop) in &pairs {
        stop.synchronize()
            .map_err(|e| err("waiting for an event", e))?;
        us.push(
            f64::from(
                stop.elapsed_time_f32(start)
                    .map_err(|e| err("reading an event", e))?,
            ) * 1e3,
        );
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    Ok(EventTiming {
        median_us: at(0.5),
        p20_us: at(0.2),
        p80_us: at(0.8),
        min_us: us[0],
        runs,
    })
}

/// The protocol's floor: [`time_events`] of one launch of `timing_touch` (one CTA, lane 0 copies
/// 16 cold bytes). No launch that reads memory takes less under this protocol, so a speedup whose
/// two sides both sit near it cannot exceed `baseline / floor`.
///
/// ```no_run
/// let gpu = muse_cuda::Gpu::get().expect("a GPU");
/// let floor = muse_cuda::timing::launch_floor(gpu, 5, 100).expect("timing");
/// assert!(floor.median_us > 0.0);
/// ```
pub fn launch_floor(gpu: &'static Gpu, warmup: usize, runs: usize) -> Result<EventTiming> {
    let (src, dst): (Buf<u8>, Buf<u8>) = (gpu.upload(&[1u8; 16])?, gpu.alloc(16)?);
    let func = gpu.function(MODULE.get(gpu)?, k::timing::TOUCH)?;
    time_events(gpu, warmup, runs, || {
        let stream = &gpu.stream;
        // SAFETY: (1) two pointer arguments in C order (const uint4*, uint4*); (2) src and dst
        // hold 16 bytes each, cuMemAlloc alignment covers uint4; one thread reads and writes one
        // uint4; (3) both buffers outlive the timed runs (time_events synchronises before it
        // returns).
        unsafe { cust::launch!(func<<<1, 32, 0, stream>>>(src.ptr(), dst.ptr())) }
            .map_err(|e| err("launching timing_touch", e))
    })
}
