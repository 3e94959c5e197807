//! BK-Core forward on the GPU: launchers (kernels: `../kernels/bk_core.cu`) and the [`Cuda`]
//! implementation of the [`BkCore`] op trait (gradient: `bk_core_bwd.rs`).
//!
//! A row of up to `chunk_len = threads × E` elements is one CTA and one launch; longer rows take
//! three launches: chunk aggregates, per-row chunk seeds, then the forward kernel with seeds.

use cust::function::{BlockSize, GridSize};
use cust::launch;
use cust::memory::DevicePointer;
use muse_reference::bk_core::{BkCore, BkCoreArgs, BkCoreGrad};
use muse_reference::{Error, Precision, Result};
use ndarray::{Array2, ArrayView2};
use num_complex::Complex64;

use crate::device::{err, k, Buf, Cuda, Gpu, GpuFloat};

/// How a (B, N) problem maps onto CTAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Threads per CTA (a multiple of 32).
    pub threads: u32,
    /// Elements per CTA: `threads × elements per thread`.
    pub chunk_len: u32,
    /// CTAs per row.
    pub chunks: u32,
    /// Rows (B).
    pub rows: u32,
    /// Row length (N).
    pub n: u64,
}

impl Plan {
    /// Plans `rows × n` with `elems` elements per thread and at most `max_threads` per CTA.
    pub fn new(rows: usize, n: usize, elems: u32, max_threads: u32) -> Result<Self> {
        let too_big = |what: &str| Error::Unsupported {
            op: "bk_core",
            backend: "cuda",
            what: what.into(),
        };
        let rows = u32::try_from(rows)
            .ok()
            .filter(|&r| r <= 65_535)
            .ok_or_else(|| too_big("B must be at most 65535 (grid y)"))?;
        let per_thread = (n as u64).div_ceil(u64::from(elems));
        let threads = (per_thread.div_ceil(32) * 32).clamp(32, u64::from(max_threads)) as u32;
        let chunk_len = threads * elems;
        let chunks = u32::try_from((n as u64).div_ceil(u64::from(chunk_len)))
            .map_err(|_| too_big("N is too long"))?;
        Ok(Self {
            threads,
            chunk_len,
            chunks,
            rows,
            n: n as u64,
        })
    }

    /// The forward plan of precision `T`.
    pub fn forward<T: GpuFloat>(rows: usize, n: usize) -> Result<Self> {
        Self::new(rows, n, T::FWD_ELEMS, T::FWD_THREADS)
    }

    pub(crate) fn grid(&self) -> GridSize {
        GridSize::xy(self.chunks, self.rows)
    }

    pub(crate) fn block(&self) -> BlockSize {
        BlockSize::x(self.threads)
    }

    /// Slots of per-(row, chunk) workspace.
    pub fn slots(&self) -> usize {
        self.rows as usize * self.chunks as usize
    }
}

pub(crate) fn pick<T: GpuFloat>(f32_name: &'static str, f64_name: &'static str) -> &'static str {
    if T::SUFFIX == "f32" {
        f32_name
    } else {
        f64_name
    }
}

/// A BK-Core problem resident on the device: a (B, N), b and c (B, N−1) in precision `T`.
pub struct Problem<T: GpuFloat> {
    /// B.
    pub batch: usize,
    /// N.
    pub n: usize,
    /// The shift.
    pub z: Complex64,
    pub(crate) a: Buf<T>,
    pub(crate) b: Buf<T>,
    pub(crate) c: Buf<T>,
}

fn flat<T: GpuFloat>(x: ArrayView2<'_, f64>) -> Vec<T> {
    x.iter().map(|&v| T::of(v)).collect()
}

impl<T: GpuFloat> Problem<T> {
    /// Uploads checked arguments, rounding them to `T`.
    pub fn upload(gpu: &'static Gpu, args: &BkCoreArgs<'_>) -> Result<Self> {
        Ok(Self {
            batch: args.batch(),
            n: args.n(),
            z: args.z(),
            a: gpu.upload(&flat::<T>(args.a()))?,
            b: gpu.upload(&flat::<T>(args.b()))?,
            c: gpu.upload(&flat::<T>(args.c()))?,
        })
    }

    pub(crate) fn z(&self) -> (T, T) {
        (T::of(self.z.re), T::of(self.z.im))
    }
}

/// Per-(row, chunk) Möbius aggregates and seeds of rows longer than one chunk.
pub(crate) struct Seeds<T: GpuFloat> {
    pub(crate) agg_f: Buf<T>,
    pub(crate) agg_b: Buf<T>,
    pub(crate) seed_f: Buf<T>,
    pub(crate) seed_b: Buf<T>,
}

impl<T: GpuFloat> Seeds<T> {
    /// Workspace for `plan`, or `None` when rows fit one chunk.
    pub(crate) fn new(gpu: &'static Gpu, plan: &Plan) -> Result<Option<Self>> {
        if plan.chunks == 1 {
            return Ok(None);
        }
        let slots = plan.slots();
        Ok(Some(Self {
            agg_f: gpu.alloc(slots * 8)?,
            agg_b: gpu.alloc(slots * 8)?,
            seed_f: gpu.alloc(slots * 4)?,
            seed_b: gpu.alloc(slots * 4)?,
        }))
    }

    pub(crate) fn ptrs(seeds: &Option<Self>) -> (DevicePointer<T>, DevicePointer<T>) {
        seeds
            .as_ref()
            .map_or((DevicePointer::null(), DevicePointer::null()), |s| {
                (s.seed_f.ptr(), s.seed_b.ptr())
            })
    }

    /// Queues the chunk aggregates and the per-row seeds.
    pub(crate) fn compute(&self, gpu: &Gpu, p: &Problem<T>, plan: &Plan) -> Result<()> {
        chunk_agg(gpu, p, plan, &self.agg_f, &self.agg_b)?;
        mobius_seeds(
            gpu,
            plan,
            &self.agg_f,
            &self.agg_b,
            &self.seed_f,
            &self.seed_b,
        )
    }
}

/// The forward pass's workspace and output `g`: (B, N) complex, interleaved [re, im].
pub struct ForwardWs<T: GpuFloat> {
    /// The plan.
    pub plan: Plan,
    seeds: Option<Seeds<T>>,
    /// G, 2·B·N values.
    pub g: Buf<T>,
}

impl<T: GpuFloat> ForwardWs<T> {
    /// Allocates the workspace for `p`.
    pub fn new(gpu: &'static Gpu, p: &Problem<T>) -> Result<Self> {
        let plan = Plan::forward::<T>(p.batch, p.n)?;
        Ok(Self {
            plan,
            seeds: Seeds::new(gpu, &plan)?,
            g: gpu.alloc(2 * p.batch * p.n)?,
        })
    }
}

/// Queues the forward pass (1 launch, or 3 for rows longer than one chunk). No host wait.
pub fn forward<T: GpuFloat>(gpu: &Gpu, p: &Problem<T>, ws: &mut ForwardWs<T>) -> Result<()> {
    if let Some(seeds) = &ws.seeds {
        seeds.compute(gpu, p, &ws.plan)?;
    }
    let (seed_f, seed_b) = Seeds::ptrs(&ws.seeds);
    launch_forward(gpu, p, &ws.plan, seed_f, seed_b, &ws.g)
}

/// C: `bk_core_forward_<T>(const T* a, const T* b, const T* c, long long n, int chunk_len,
/// T z_re, T z_im, const T* seed_f, const T* seed_b, T* g)`.
fn launch_forward<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    plan: &Plan,
    seed_f: DevicePointer<T>,
    seed_b: DevicePointer<T>,
    g: &Buf<T>,
) -> Result<()> {
    let name = pick::<T>(k::bk_core::FORWARD_F32, k::bk_core::FORWARD_F64);
    let func = gpu.function(&gpu.bk_core, name)?;
    let stream = &gpu.stream;
    let (z_re, z_im) = p.z();
    let (n, chunk_len) = (plan.n as i64, plan.chunk_len as i32);
    // SAFETY: (1) ten arguments in C order, i64 = long long, i32 = int, T = float/double matching
    // the `_f32`/`_f64` symbol chosen by `pick`; (2) a is B·N, b and c B·(N−1), g 2·B·N elements,
    // seeds null or `slots × 4` (Seeds::new), for the same (B, N) the plan was made from;
    // (3) every `Buf` synchronises `stream` before it is freed.
    unsafe {
        launch!(func<<<plan.grid(), plan.block(), 0, stream>>>(
            p.a.ptr(), p.b.ptr(), p.c.ptr(), n, chunk_len, z_re, z_im, seed_f, seed_b, g.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `bk_core_chunk_agg_<T>(const T* a, const T* b, const T* c, long long n, int chunk_len,
/// T z_re, T z_im, T* agg_f, T* agg_b)`.
pub(crate) fn chunk_agg<T: GpuFloat>(
    gpu: &Gpu,
    p: &Problem<T>,
    plan: &Plan,
    agg_f: &Buf<T>,
    agg_b: &Buf<T>,
) -> Result<()> {
    let name = pick::<T>(k::bk_core::CHUNK_AGG_F32, k::bk_core::CHUNK_AGG_F64);
    let func = gpu.function(&gpu.bk_core, name)?;
    let stream = &gpu.stream;
    let (z_re, z_im) = p.z();
    let (n, chunk_len) = (plan.n as i64, plan.chunk_len as i32);
    // SAFETY: (1) nine arguments in C order with the widths of `launch_forward`; (2) agg_f and
    // agg_b hold `slots × 8` elements (Seeds::new) for this plan; inputs as in `launch_forward`;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<plan.grid(), plan.block(), 0, stream>>>(
            p.a.ptr(), p.b.ptr(), p.c.ptr(), n, chunk_len, z_re, z_im, agg_f.ptr(), agg_b.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// C: `bk_core_mobius_seeds_<T>(const T* agg_f, const T* agg_b, int chunks, T* seed_f, T* seed_b)`,
/// one CTA per row.
fn mobius_seeds<T: GpuFloat>(
    gpu: &Gpu,
    plan: &Plan,
    agg_f: &Buf<T>,
    agg_b: &Buf<T>,
    seed_f: &Buf<T>,
    seed_b: &Buf<T>,
) -> Result<()> {
    let name = pick::<T>(k::bk_core::MOBIUS_SEEDS_F32, k::bk_core::MOBIUS_SEEDS_F64);
    let func = gpu.function(&gpu.bk_core, name)?;
    let stream = &gpu.stream;
    let chunks = plan.chunks as i32;
    // SAFETY: (1) five arguments in C order, i32 = int; (2) aggregates hold `slots × 8`, seeds
    // `slots × 4` elements for this plan, one CTA per row reads/writes only its row's slots;
    // (3) buffers synchronise `stream` before they are freed.
    unsafe {
        launch!(func<<<plan.rows, k::bk_core::SEED_THREADS, 0, stream>>>(
            agg_f.ptr(), agg_b.ptr(), chunks, seed_f.ptr(), seed_b.ptr()
        ))
    }
    .map_err(|e| err(&format!("launching {name}"), e))
}

/// The first non-finite element of a (B, N) complex result, as a singular-matrix error.
pub(crate) fn check_finite(g: &Array2<Complex64>, z: Complex64) -> Result<()> {
    match g
        .indexed_iter()
        .find(|(_, v)| !(v.re.is_finite() && v.im.is_finite()))
    {
        Some(((row, index), _)) => Err(Error::Singular {
            op: "bk_core",
            row,
            index,
            z_re: z.re,
            z_im: z.im,
        }),
        None => Ok(()),
    }
}

fn forward_host<T: GpuFloat>(
    gpu: &'static Gpu,
    args: &BkCoreArgs<'_>,
) -> Result<Array2<Complex64>> {
    let p = Problem::<T>::upload(gpu, args)?;
    let mut ws = ForwardWs::new(gpu, &p)?;
    ws.g.poison()?;
    forward(gpu, &p, &mut ws)?;
    let g = ws.g.to_vec()?;
    let out = Array2::from_shape_fn((p.batch, p.n), |(r, i)| {
        let at = 2 * (r * p.n + i);
        Complex64::new(g[at].to_f64_exact(), g[at + 1].to_f64_exact())
    });
    check_finite(&out, args.z())?;
    Ok(out)
}

impl BkCore for Cuda {
    fn bk_core(&self, args: &BkCoreArgs<'_>, precision: Precision) -> Result<Array2<Complex64>> {
        match precision {
            Precision::F32 => forward_host::<f32>(self.gpu()?, args),
            Precision::F64 => forward_host::<f64>(self.gpu()?, args),
        }
    }

    fn bk_core_grad(
        &self,
        args: &BkCoreArgs<'_>,
        grad_g: ArrayView2<'_, Complex64>,
        precision: Precision,
    ) -> Result<BkCoreGrad> {
        args.check_grad(&grad_g)?;
        // The forward pass detects a singular T − zI the same way the CPU reference does.
        self.bk_core(args, precision)?;
        match precision {
            Precision::F32 => crate::bk_core_bwd::backward_host::<f32>(self.gpu()?, args, grad_g),
            Precision::F64 => crate::bk_core_bwd::backward_host::<f64>(self.gpu()?, args, grad_g),
        }
    }
}
