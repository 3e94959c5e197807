//! BK-Core benches at the original's shapes (B16 N4096 is the KPI) and an N sweep, on the
//! original's benchmark inputs (a, b, c ~ N(0,1), z = 0.1 + 0.1i).

use criterion::{BenchmarkId, Criterion, Throughput};
use muse::bk_core::{BkCore, BkCoreArgs};
use muse::verify::cases::{bk_core_inputs, Regime, BK_CORE_SHAPES, BK_CORE_SWEEP_N};
use muse::{Backend, Cpu, Precision};
use ndarray::Array2;
use num_complex::Complex64;

fn id(batch: usize, n: usize) -> String {
    format!("B{batch}xN{n}")
}

fn bench_forward<B: Backend>(
    c: &mut Criterion,
    be: &B,
    group: &str,
    shapes: &[(usize, usize)],
    precisions: &[Precision],
) {
    for &precision in precisions {
        let mut g = c.benchmark_group(format!("{group}/{}-{precision}", B::NAME));
        for &(batch, n) in shapes {
            let (a, b, cc, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
            let args = BkCoreArgs::new(a.view(), b.view(), cc.view(), z).expect("valid inputs");
            g.throughput(Throughput::Elements((batch * n) as u64));
            g.bench_function(BenchmarkId::from_parameter(id(batch, n)), |bch| {
                bch.iter(|| be.bk_core(&args, precision).expect("forward"))
            });
        }
        g.finish();
    }
}

/// Forward at the original's shapes, f64 and f32.
pub fn forward(c: &mut Criterion) {
    bench_forward(c, &Cpu, "bk_core_forward", &BK_CORE_SHAPES, &Precision::ALL);
}

/// Forward and exact gradient together (the training step's cost), f64.
pub fn forward_backward(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("bk_core_forward_backward/{}-f64", Cpu::NAME));
    for &(batch, n) in &BK_CORE_SHAPES {
        let (a, b, cc, z) = bk_core_inputs(Regime::Benchmark, batch, n, 42);
        let args = BkCoreArgs::new(a.view(), b.view(), cc.view(), z).expect("valid inputs");
        let w = Array2::from_elem((batch, n), Complex64::new(1.0, 0.5));
        g.throughput(Throughput::Elements((batch * n) as u64));
        g.bench_function(BenchmarkId::from_parameter(id(batch, n)), |bch| {
            bch.iter(|| {
                Cpu.bk_core_grad(&args, w.view(), Precision::F64)
                    .expect("grad")
            })
        });
    }
    g.finish();
}

/// Forward against N at B = 1: time should grow linearly.
pub fn sweep(c: &mut Criterion) {
    let shapes: Vec<(usize, usize)> = BK_CORE_SWEEP_N.iter().map(|&n| (1, n)).collect();
    bench_forward(c, &Cpu, "bk_core_sweep", &shapes, &[Precision::F64]);
}
