//! `muse bench --backend cuda`: BK-Core KPIs on the GPU, timed with CUDA events (warm-up, L2
//! flushed before every repeat, median and p20/p80 of ≥ 100 repeats), at the original's shapes
//! and an N sweep to 2M; forward, backward and forward+backward; measured allocation peaks; the
//! CPU reference and (optionally) PyTorch baselines from the same run side by side. Writes
//! `<out>/kpi-cuda.{json,md,svg}`.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use muse_cuda::bk_core::{forward, ForwardWs, Problem};
use muse_cuda::bk_core_bwd::{backward, interleave, BackwardWs};
use muse_cuda::timing::{time_events, EventTiming};
use muse_cuda::{Cuda, Gpu, GpuFloat};
use muse_reference::bk_core::{BkCore, BkCoreArgs};
use muse_reference::{Backend, Cpu, Precision};
use muse_verify::cases::{bk_core_inputs, Regime, BK_CORE_SHAPES, BK_CORE_SWEEP_N_GPU};
use muse_verify::plot::{time_vs_n, Series};
use muse_verify::report::Site;
use muse_verify::suite::checks::{self, Class, Row};
use muse_verify::{Record, Report, Target};
use ndarray::Array2;
use num_complex::Complex64;

use super::bench::Args;
use crate::Outcome;

/// Forward at B16 N4096 (f32) on an H100: the target.
const FWD_KPI_US: f64 = 20.0;
/// Forward + backward at B16 N4096 (f32).
const FWD_BWD_KPI_US: f64 = 50.0;
/// Allocation peak at most this multiple of inputs plus outputs.
const MEM_FACTOR: f64 = 2.0;
/// Launches between one event pair for the batched figure.
const BATCH: usize = 20;

struct Ctx<'a> {
    gpu: &'static Gpu,
    report: &'a mut Report,
    runs: usize,
}

/// Runs the CUDA benchmarks.
pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.runs >= 100,
        "`--runs {}`: use at least 100 timed repeats",
        args.runs
    );
    let cuda = Cuda::new()?;
    let gpu = cuda.gpu()?;
    let mut report = Report::new(cuda.device());
    let info = gpu.info();
    for (k, v) in cuda.provenance().into_iter().chain([
        ("timing", format!("CUDA events; 10 warm-up calls; L2 ({} MB) flushed before each of {} repeats; median, p20, p80", info.l2_bytes >> 20, args.runs)),
        ("inputs", "a, b, c ~ N(0,1) seed 42, z = 0.1+0.1i (the original's benchmark inputs)".into()),
        ("anchor", "original on an H100 at B16 N4096: mode A (its correct path) 2694 ms, mode B (default, wrong results) 25.2 ms".into()),
        ("plot", "kpi-cuda.svg".into()),
    ]) {
        report.meta.insert(k.into(), v.into());
    }
    let shapes = BK_CORE_SHAPES.len() * 2 + BK_CORE_SWEEP_N_GPU.len();
    let bar = ProgressBar::new(shapes as u64).with_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .expect("invariant: valid template"),
    );
    bar.set_prefix("bench");
    let mut ctx = Ctx {
        gpu,
        report: &mut report,
        runs: args.runs,
    };
    let mut fwd_f32 = BTreeMap::new();
    for &(batch, n) in &BK_CORE_SHAPES {
        bar.set_message(format!("B{batch} N{n}"));
        let t = measure::<f32>(&mut ctx, batch, n, true)?;
        fwd_f32.insert((batch, n), t);
        bar.inc(1);
        measure::<f64>(&mut ctx, batch, n, true)?;
        bar.inc(1);
        cpu_side_by_side(&mut ctx, batch, n, t)?;
    }
    let (mut sweep_fwd, mut sweep_fb) = (Vec::new(), Vec::new());
    for &n in &BK_CORE_SWEEP_N_GPU {
        bar.set_message(format!("sweep N{n}"));
        let (f, fb) = measure::<f32>(&mut ctx, 1, n, false)?;
        sweep_fwd.push((n as f64, f));
        sweep_fb.push((n as f64, fb));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let exponent = super::bench::scaling_exponent(&sweep_fwd[2..]);
    let top = [
        1,
        *BK_CORE_SWEEP_N_GPU
            .last()
            .expect("invariant: non-empty sweep"),
    ];
    let site = Site {
        kernel: "bk_core_forward_sweep",
        backend: "cuda",
        case: "sweep_n65536_up",
        shape: &top,
        dtype: "f32",
    };
    ctx.report.records.push(site.record(
        "scaling_exponent",
        exponent,
        "",
        Some(Target::AtMost(1.15)),
    ));
    if let Some(path) = &args.torch_baseline {
        torch_side_by_side(ctx.report, path, &fwd_f32)?;
    }
    if let Some(dir) = &args.sanitizer_dir {
        sanitizer_records(ctx.report, dir)?;
    }
    std::fs::create_dir_all(&args.out)?;
    let svg = args.out.join("kpi-cuda.svg");
    let series = [
        Series {
            label: "cuda f32 forward, B=1".into(),
            points: sweep_fwd,
        },
        Series {
            label: "cuda f32 forward+backward, B=1".into(),
            points: sweep_fb,
        },
    ];
    time_vs_n(
        &svg,
        &format!("BK-Core on {}: time against N", info.name),
        "us",
        &series,
    )?;
    super::bench::finish(
        &report,
        &args.out,
        "kpi-cuda",
        "muse KPI report (CUDA)",
        &svg,
    )
}

fn timing_records(site: &Site<'_>, t: &EventTiming, target: Option<Target>) -> Vec<Record> {
    vec![
        site.record("time_median", t.median_us, "us", target),
        site.record("time_p20", t.p20_us, "us", None),
        site.record("time_p80", t.p80_us, "us", None),
        site.record("time_min", t.min_us, "us", None),
        site.record("runs", t.runs as f64, "", None),
    ]
}

/// Times forward, backward and forward+backward of one shape in precision `T`, records memory
/// peaks and agreement with the CPU f64 reference; returns the forward and fwd+bwd medians (µs).
fn measure<T: GpuFloat>(
    ctx: &mut Ctx<'_>,
    batch: usize,
    n: usize,
    full: bool,
) -> anyhow::Result<(f64, f64)> {
    let gpu = ctx.gpu;
    let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let w = Array2::from_shape_fn((batch, n), |(r, i)| {
        Complex64::new(((r * n + i) as f64 * 0.37).sin(), 0.5)
    });
    let dtype = T::PRECISION.name();
    let case = if full {
        format!("B{batch}xN{n}")
    } else {
        format!("sweep_N{n}")
    };
    let shape = [batch, n];
    let site = |kernel| Site {
        kernel,
        backend: "cuda",
        case: &case,
        shape: &shape,
        dtype,
    };
    let size = std::mem::size_of::<T>() as f64;
    let (bn, off) = ((batch * n) as f64, (batch * (n - 1)) as f64);

    // Allocation peaks: everything this shape allocates, measured by the tracking allocator,
    // and the driver's view (free memory before and after, 2 MiB granular).
    let base = gpu.live_bytes();
    gpu.reset_peak();
    let (free0, _) = gpu.mem_info()?;
    let p = Problem::<T>::upload(gpu, &args)?;
    let mut fws = ForwardWs::new(gpu, &p)?;
    forward(gpu, &p, &mut fws)?;
    gpu.sync("forward")?;
    let fwd_peak = (gpu.peak_bytes() - base) as f64;
    let fwd_io = size * (bn + 2.0 * off + 2.0 * bn);
    let mut bws = BackwardWs::new(gpu, &p, &interleave::<T>(w.view()))?;
    backward(gpu, &p, &mut bws)?;
    gpu.sync("backward")?;
    let (free1, _) = gpu.mem_info()?;
    let fb_peak = (gpu.peak_bytes() - base) as f64;
    let fb_io = fwd_io + size * (2.0 * bn + bn + 2.0 * off);
    let mut recs = Vec::new();
    if full {
        for (kernel, peak, io) in [
            ("bk_core_forward", fwd_peak, fwd_io),
            ("bk_core_forward_backward", fb_peak, fb_io),
        ] {
            let at = site(kernel);
            recs.push(at.record("alloc_peak", peak, "bytes", None));
            recs.push(at.record("inputs_outputs", io, "bytes", None));
            let ratio = Some(Target::AtMost(MEM_FACTOR));
            recs.push(at.record("alloc_peak_over_io", peak / io, "", ratio));
        }
        let fb = site("bk_core_forward_backward");
        recs.push(fb.record(
            "driver_mem_delta",
            free0.saturating_sub(free1) as f64,
            "bytes",
            None,
        ));
        // Agreement at the benchmark shape, against the CPU f64 reference.
        let g = fws.g.to_vec()?;
        let got = Array2::from_shape_fn((batch, n), |(r, i)| {
            Complex64::new(
                g[2 * (r * n + i)].to_f64_exact(),
                g[2 * (r * n + i) + 1].to_f64_exact(),
            )
        });
        let want = Cpu.bk_core(&args, Precision::F64)?;
        let row = Row {
            kernel: "bk_core_forward",
            backend: "cuda",
            case: &case,
            shape: &shape,
            precision: T::PRECISION,
        };
        recs.extend(checks::forward(&row, &got, &want, Class::Random));
    }
    let kpi = |target: f64| {
        (full && T::PRECISION == Precision::F32 && (batch, n) == (16, 4096))
            .then_some(Target::AtMost(target))
    };
    let t_f = time_events(gpu, 10, ctx.runs, || forward(gpu, &p, &mut fws))?;
    recs.extend(timing_records(
        &site("bk_core_forward"),
        &t_f,
        kpi(FWD_KPI_US),
    ));
    let t_fb = time_events(gpu, 10, ctx.runs, || {
        forward(gpu, &p, &mut fws)?;
        backward(gpu, &p, &mut bws)
    })?;
    recs.extend(timing_records(
        &site("bk_core_forward_backward"),
        &t_fb,
        kpi(FWD_BWD_KPI_US),
    ));
    if full {
        let t_b = time_events(gpu, 10, ctx.runs, || backward(gpu, &p, &mut bws))?;
        recs.extend(timing_records(&site("bk_core_backward"), &t_b, None));
        let t_batch = time_events(gpu, 3, ctx.runs, || {
            (0..BATCH).try_for_each(|_| forward(gpu, &p, &mut fws))
        })?;
        recs.push(site("bk_core_forward").record(
            &format!("time_per_call_batched{BATCH}"),
            t_batch.median_us / BATCH as f64,
            "us",
            None,
        ));
        recs.push(site("bk_core_forward").record(
            "throughput",
            bn / t_f.median_us,
            "Melem/s",
            None,
        ));
    }
    ctx.report.records.extend(recs);
    Ok((t_f.median_us, t_fb.median_us))
}

/// The CPU reference (f64, one thread) at the same shape in the same process, and the ratio.
fn cpu_side_by_side(
    ctx: &mut Ctx<'_>,
    batch: usize,
    n: usize,
    (fwd_us, _): (f64, f64),
) -> anyhow::Result<()> {
    let (a, b, c, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let t = crate::timing::time(Duration::from_millis(500), || {
        Cpu.bk_core(&args, Precision::F64).map(|_| ())
    });
    let (case, shape) = (format!("B{batch}xN{n}"), [batch, n]);
    let cpu = Site {
        kernel: "bk_core_forward",
        backend: "cpu",
        case: &case,
        shape: &shape,
        dtype: "f64",
    };
    ctx.report
        .records
        .push(cpu.record("time_median", t.median_ms * 1e3, "us", None));
    let gpu = Site {
        backend: "cuda",
        dtype: "f32",
        ..cpu
    };
    ctx.report.records.push(gpu.record(
        "speedup_vs_cpu_reference_f64",
        t.median_ms * 1e3 / fwd_us,
        "x",
        None,
    ));
    Ok(())
}

/// Records the PyTorch baselines (`ci/baselines/torch_bk_core.py`, same GPU, same run) and the
/// speedup of the f32 forward kernel over each.
fn torch_side_by_side(
    report: &mut Report,
    path: &std::path::Path,
    fwd: &BTreeMap<(usize, usize), (f64, f64)>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("`--torch-baseline {}`: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    if let Some(v) = json.get("torch") {
        report.meta.insert("torch".into(), v.clone());
    }
    for r in json["records"].as_array().into_iter().flatten() {
        let (Some(imp), Some(batch), Some(n), Some(ms)) = (
            r["impl"].as_str(),
            r["B"].as_u64(),
            r["N"].as_u64(),
            r["median_ms"].as_f64(),
        ) else {
            anyhow::bail!(
                "`--torch-baseline {}`: malformed record {r}",
                path.display()
            );
        };
        let (batch, n) = (batch as usize, n as usize);
        let (case, shape) = (format!("B{batch}xN{n}"), [batch, n]);
        let dtype = r["dtype"].as_str().unwrap_or("?");
        let backend = format!("torch:{imp}");
        let t = Site {
            kernel: "bk_core_forward",
            backend: &backend,
            case: &case,
            shape: &shape,
            dtype,
        };
        report
            .records
            .push(t.record("time_median", ms * 1e3, "us", None));
        report
            .records
            .push(t.record("runs", r["runs"].as_f64().unwrap_or(f64::NAN), "", None));
        if let Some(err) = r["max_abs_err_vs_dense"].as_f64() {
            report
                .records
                .push(t.record("max_abs_err_vs_dense", err, "", None));
        }
        if let Some(&(us, _)) = fwd.get(&(batch, n)) {
            let g = Site {
                backend: "cuda",
                dtype: "f32",
                ..t
            };
            report.records.push(g.record(
                &format!("speedup_vs_torch_{imp}"),
                ms * 1e3 / us,
                "x",
                None,
            ));
        }
    }
    Ok(())
}

/// compute-sanitizer results: the error count each tool printed, target 0.
fn sanitizer_records(report: &mut Report, dir: &std::path::Path) -> anyhow::Result<()> {
    for tool in ["memcheck", "racecheck"] {
        let path = dir.join(format!("{tool}.log"));
        let site = Site {
            kernel: "bk_core_all_kernels",
            backend: "cuda",
            case: "compute-sanitizer",
            shape: &[],
            dtype: "f32+f64",
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            report.meta.insert(
                format!("sanitizer_{tool}"),
                format!("not run: {} missing", path.display()).into(),
            );
            continue;
        };
        let errors = text.lines().rev().find_map(parse_summary);
        let value = errors.map_or(f64::NAN, |e| e as f64);
        report.records.push(site.record(
            &format!("{tool}_errors"),
            value,
            "",
            Some(Target::AtMost(0.0)),
        ));
        // The run under the tool must have checked something: `muse verify` prints "N records, …".
        let checked = text.lines().find_map(|l| {
            let (n, rest) = l.trim().split_once(" records, ")?;
            rest.ends_with(" failed").then(|| n.parse::<f64>().ok())?
        });
        report.records.push(site.record(
            &format!("{tool}_records_checked"),
            checked.unwrap_or(0.0),
            "",
            Some(Target::AtLeast(1.0)),
        ));
        report.meta.insert(
            format!("sanitizer_{tool}"),
            text.lines()
                .rev()
                .find(|l| parse_summary(l).is_some())
                .unwrap_or("no summary line")
                .trim()
                .into(),
        );
    }
    Ok(())
}

/// `ERROR SUMMARY: 3 errors` (memcheck) or `RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)`.
fn parse_summary(line: &str) -> Option<u64> {
    let line = line.trim().trim_start_matches("========= ");
    if let Some(rest) = line.strip_prefix("ERROR SUMMARY: ") {
        return rest.split_whitespace().next()?.parse().ok();
    }
    let rest = line.strip_prefix("RACECHECK SUMMARY: ")?;
    let inner = rest.split_once('(')?.1;
    inner.split_whitespace().next()?.parse().ok()
}
