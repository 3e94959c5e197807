//! Shapes and input generators shared by tests, benches and `muse verify`/`muse bench`, so every
//! consumer measures the same thing.

use ndarray::Array2;
use num_complex::Complex64;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// The original's BK-Core benchmark shapes (B, N): B16 N4096 is the KPI (design §9, §10).
pub const BK_CORE_SHAPES: [(usize, usize); 4] = [(16, 4096), (1, 4096), (16, 512), (64, 4096)];

/// N sweep for the CPU scaling plot (B = 1).
pub const BK_CORE_SWEEP_N: [usize; 9] = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// N sweep for the GPU scaling plot (B = 1), up to one million.
pub const BK_CORE_SWEEP_N_GPU: [usize; 8] = [
    4096, 16384, 65536, 131072, 262144, 524288, 1_000_000, 2_097_152,
];

/// Input regimes the kernels see (design §4, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// The original's benchmark inputs: a, b, c ~ N(0, 1) independent, z = 0.1 + 0.1i.
    Benchmark,
    /// The BENCH-era layer: a = −2 + clip(0.5·N(0,1), ±3), b = c = 1, z = 1.3133i.
    Laplacian,
    /// Symmetric random couplings: a ~ N(0,1), b = c ~ N(0,1), z = 0.2 + 0.3i.
    Symmetric,
}

impl Regime {
    /// Every regime.
    pub const ALL: [Regime; 3] = [Regime::Benchmark, Regime::Laplacian, Regime::Symmetric];

    /// Short name for case ids.
    pub fn name(self) -> &'static str {
        match self {
            Regime::Benchmark => "benchmark",
            Regime::Laplacian => "laplacian",
            Regime::Symmetric => "symmetric",
        }
    }

    /// The regime's shift z.
    pub fn z(self) -> Complex64 {
        match self {
            Regime::Benchmark => Complex64::new(0.1, 0.1),
            Regime::Laplacian => Complex64::new(0.0, 1.3133),
            Regime::Symmetric => Complex64::new(0.2, 0.3),
        }
    }
}

/// Inputs `(a, b, c, z)` of one BK-Core call.
pub type BkCoreInputs = (Array2<f64>, Array2<f64>, Array2<f64>, Complex64);

/// Deterministic inputs of shape (B, N) in `regime` from `seed`.
///
/// ```
/// use muse_verify::cases::{bk_core_inputs, Regime};
/// let (a, b, _, _) = bk_core_inputs(Regime::Benchmark, 2, 16, 42);
/// assert_eq!((a.dim(), b.dim()), ((2, 16), (2, 15)));
/// ```
pub fn bk_core_inputs(regime: Regime, batch: usize, n: usize, seed: u64) -> BkCoreInputs {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = |shape: (usize, usize)| {
        Array2::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
    };
    let off = (batch, n.saturating_sub(1));
    let (a, b, c) = match regime {
        Regime::Benchmark => (normal((batch, n)), normal(off), normal(off)),
        Regime::Laplacian => {
            let a = normal((batch, n)).mapv(|v: f64| -2.0 + (0.5 * v).clamp(-3.0, 3.0));
            (a, Array2::ones(off), Array2::ones(off))
        }
        Regime::Symmetric => {
            let a = normal((batch, n));
            let b = normal(off);
            (a, b.clone(), b)
        }
    };
    (a, b, c, regime.z())
}

/// Tangent inputs of one hyperbolic-attention call with dims (B, H, N, M, D, Dv) from `seed`:
/// q, k ~ N(0, 1)/(√D·√c) (so √c‖q‖ ≈ 1, the regime of the model), v and the upstream gradient
/// d_o ~ N(0, 1).
///
/// ```
/// let (q, k, v, d_o) = muse_verify::cases::hyp_attn_inputs((1, 2, 5, 7, 4, 3), 0.693, 1);
/// assert_eq!((q.dim(), k.dim(), v.dim(), d_o.dim()), ((1, 2, 5, 4), (1, 2, 7, 4), (1, 2, 7, 3), (1, 2, 5, 3)));
/// ```
pub fn hyp_attn_inputs(
    (b, h, n, m, d, dv): (usize, usize, usize, usize, usize, usize),
    c: f64,
    seed: u64,
) -> (
    ndarray::Array4<f64>,
    ndarray::Array4<f64>,
    ndarray::Array4<f64>,
    ndarray::Array4<f64>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let scale = 1.0 / ((d as f64).sqrt() * c.sqrt());
    let mut draw = |shape: (usize, usize, usize, usize), s: f64| {
        ndarray::Array4::from_shape_simple_fn(shape, || {
            let x: f64 = StandardNormal.sample(&mut rng);
            x * s
        })
    };
    let q = draw((b, h, n, d), scale);
    let k = draw((b, h, m, d), scale);
    let v = draw((b, h, m, dv), 1.0);
    let d_o = draw((b, h, n, dv), 1.0);
    (q, k, v, d_o)
}
