//! Fused LayerNorm + hyperbolic projection (design hyperbolic.md §5): per row of x (R, D),
//! y = (x − μ)/√(σ² + eps)·γ + β_ln (biased variance), then `out` = exp0(y) ([`HypLnMode::Exp0`],
//! the default) or the original's radial clip ([`HypLnMode::Clip`]), with the exact backward
//! (LN backward composed with the projection's VJP, §2.5) for x, γ, β_ln and the curvature c.
//!
//! - [`row`]: the per-row maths, generic over the float type (what the CUDA kernel mirrors).
//!
//! Other faces of this family: `crates/muse-cuda/src/hyp_ln.rs` (launchers),
//! `crates/muse-cuda/kernels/hyp_ln.cu`, `tests/hyp_ln.rs`, `fixtures/hyperbolic/` (cases
//! `exp0_*`, `clip_*`).
//!
//! Precision: f64 computes in f64; f32 in f32; bf16 rounds x, γ, β_ln (and the upstream g) to
//! bf16 and computes in f32. In every precision ‖y‖² and the per-row projection factors are
//! accumulated in f64 from the rounded y: the exp0 factor is capped at 1 − 2ε of the element type
//! ([`crate::poincare::scalar::tanh_cap`]), and only a norm accurate to far below ε keeps the
//! rounded image strictly inside the ball (√c‖out‖ < 1) at saturation.

mod cpu;
pub mod row;

pub use cpu::{backward, forward};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::poincare::{check_finite, check_nonempty, Curvature};
use crate::{Cpu, Dtype, Error, Result};

pub(crate) const OP: &str = "hyp_ln";

/// Default LayerNorm epsilon.
pub const EPS_DEFAULT: f64 = 1e-5;
/// [`HypLnMode::Clip`]: the clip radius is 1/√c − this margin (the original's fused kernel).
pub const CLIP_MARGIN: f64 = 0.01;
/// [`HypLnMode::Clip`]: the norm is √(‖y‖² + this), as in the original's Triton kernel.
pub const CLIP_NORM_EPS: f64 = 1e-8;

/// How y is mapped into the ball.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HypLnMode {
    /// out = exp0(y) with the tanh factor capped so √c‖out‖ < 1 (the default).
    #[default]
    Exp0,
    /// Compat (`src/kernels/fused_ln_hyperbolic_triton.py`): out = y·min(1, R/n) with
    /// R = 1/√c − 0.01 and n = √(‖y‖² + 1e-8). A radial clip, not an exp map.
    Clip,
}

impl HypLnMode {
    /// `"exp0"` or `"clip"`, as in the fixtures' `mode` parameter.
    pub fn name(self) -> &'static str {
        match self {
            HypLnMode::Exp0 => "exp0",
            HypLnMode::Clip => "clip",
        }
    }
}

impl std::str::FromStr for HypLnMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exp0" | "Exp0" => Ok(HypLnMode::Exp0),
            "clip" | "Clip" => Ok(HypLnMode::Clip),
            other => Err(Error::Domain {
                op: OP,
                arg: "mode",
                rule: format!("must be `exp0` or `clip`, got `{other}`"),
            }),
        }
    }
}

/// Scalar settings of one call: curvature, LayerNorm epsilon and mode.
///
/// ```
/// use muse_reference::hyp_ln::{HypLnConfig, HypLnMode};
/// let cfg = HypLnConfig::new(0.693).mode(HypLnMode::Clip);
/// assert_eq!((cfg.eps, cfg.mode), (1e-5, HypLnMode::Clip));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HypLnConfig {
    /// Curvature magnitude c > 0.
    pub c: f64,
    /// LayerNorm epsilon, > 0.
    pub eps: f64,
    /// Projection mode.
    pub mode: HypLnMode,
}

impl HypLnConfig {
    /// Curvature `c` with eps = 1e-5 and [`HypLnMode::Exp0`].
    pub fn new(c: f64) -> Self {
        Self {
            c,
            eps: EPS_DEFAULT,
            mode: HypLnMode::Exp0,
        }
    }
    /// With this LayerNorm epsilon.
    pub fn eps(self, eps: f64) -> Self {
        Self { eps, ..self }
    }
    /// With this mode.
    pub fn mode(self, mode: HypLnMode) -> Self {
        Self { mode, ..self }
    }
}

/// Checked arguments of one fused LN + projection call; every backend takes these.
///
/// ```
/// use muse_reference::hyp_ln::{HypLnArgs, HypLnConfig};
/// use ndarray::{Array1, Array2};
/// let (x, gamma, beta) = (Array2::from_elem((3, 8), 0.5), Array1::ones(8), Array1::zeros(8));
/// let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(1.0))?;
/// assert_eq!((args.rows(), args.dim()), (3, 8));
/// let short = Array1::ones(7);
/// let e = HypLnArgs::new(x.view(), short.view(), beta.view(), HypLnConfig::new(1.0)).unwrap_err();
/// assert_eq!(e.to_string(), "hyp_ln: `gamma` must have shape [D] = [8], got [7]");
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HypLnArgs<'a> {
    x: ArrayView2<'a, f64>,
    gamma: ArrayView1<'a, f64>,
    beta_ln: ArrayView1<'a, f64>,
    c: Curvature,
    eps: f64,
    mode: HypLnMode,
}

impl<'a> HypLnArgs<'a> {
    /// Validates shapes (x (R, D) with R, D ≥ 1; γ, β_ln (D)), finiteness of every element, c
    /// (finite, > 0; in Clip mode also 1/√c > 0.01) and eps (finite, > 0).
    pub fn new(
        x: ArrayView2<'a, f64>,
        gamma: ArrayView1<'a, f64>,
        beta_ln: ArrayView1<'a, f64>,
        cfg: HypLnConfig,
    ) -> Result<Self> {
        check_nonempty(OP, "x", &["R", "D"], x.shape())?;
        let dim = x.ncols();
        for (arg, v) in [("gamma", &gamma), ("beta_ln", &beta_ln)] {
            if v.len() != dim {
                return Err(Error::Shape {
                    op: OP,
                    arg,
                    expected: format!("[D] = [{dim}]"),
                    got: v.shape().to_vec(),
                });
            }
        }
        check_finite(OP, "x", &x)?;
        check_finite(OP, "gamma", &gamma)?;
        check_finite(OP, "beta_ln", &beta_ln)?;
        let c = Curvature::named(OP, "c", cfg.c)?;
        if cfg.mode == HypLnMode::Clip && 1.0 / c.s() - CLIP_MARGIN <= 0.0 {
            return Err(Error::Domain {
                op: OP,
                arg: "c",
                rule: format!(
                    "must be below 1e4 in `clip` mode (the clip radius 1/sqrt(c) - {CLIP_MARGIN} must be positive), got {}",
                    cfg.c
                ),
            });
        }
        if !(cfg.eps.is_finite() && cfg.eps > 0.0) {
            return Err(Error::Domain {
                op: OP,
                arg: "eps",
                rule: format!("must be finite and > 0, got {}", cfg.eps),
            });
        }
        Ok(Self {
            x,
            gamma,
            beta_ln,
            c,
            eps: cfg.eps,
            mode: cfg.mode,
        })
    }

    /// The input, (R, D).
    pub fn x(&self) -> ArrayView2<'a, f64> {
        self.x
    }
    /// The LayerNorm gain, (D).
    pub fn gamma(&self) -> ArrayView1<'a, f64> {
        self.gamma
    }
    /// The LayerNorm bias, (D).
    pub fn beta_ln(&self) -> ArrayView1<'a, f64> {
        self.beta_ln
    }
    /// The curvature.
    pub fn curvature(&self) -> Curvature {
        self.c
    }
    /// The LayerNorm epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }
    /// The projection mode.
    pub fn mode(&self) -> HypLnMode {
        self.mode
    }
    /// R.
    pub fn rows(&self) -> usize {
        self.x.nrows()
    }
    /// D.
    pub fn dim(&self) -> usize {
        self.x.ncols()
    }
    /// Rejects an upstream gradient ∂L/∂out whose shape is not (R, D) or that holds NaN/±inf.
    pub fn check_grad(&self, g: &ArrayView2<'_, f64>) -> Result<()> {
        if g.dim() != self.x.dim() {
            return Err(Error::Shape {
                op: OP,
                arg: "g",
                expected: format!("[R, D] = {:?} (as `x`)", self.x.shape()),
                got: g.shape().to_vec(),
            });
        }
        check_finite(OP, "g", g)
    }
}

/// The forward results, widened to f64.
#[derive(Debug, Clone, PartialEq)]
pub struct HypLnOut {
    /// The LayerNorm output y, (R, D).
    pub y: Array2<f64>,
    /// The ball point, (R, D).
    pub out: Array2<f64>,
    /// a = min(√c‖y‖, A_MAX) per row (the radial term §2.3 consumers need), (R).
    pub a: Array1<f64>,
}

/// Gradients of L given ∂L/∂out.
#[derive(Debug, Clone, PartialEq)]
pub struct HypLnGrad {
    /// ∂L/∂x, (R, D).
    pub dx: Array2<f64>,
    /// ∂L/∂γ, (D).
    pub dgamma: Array1<f64>,
    /// ∂L/∂β_ln, (D).
    pub dbeta_ln: Array1<f64>,
    /// ∂L/∂c.
    pub dc: f64,
}

/// Fused LayerNorm + projection on a backend.
///
/// ```
/// use muse_reference::hyp_ln::{HypLn, HypLnArgs, HypLnConfig};
/// use muse_reference::{Cpu, Dtype};
/// use ndarray::{Array1, Array2};
/// let x = Array2::from_shape_fn((2, 4), |(r, d)| (r + d) as f64);
/// let (gamma, beta) = (Array1::from_elem(4, 0.5), Array1::zeros(4));
/// let args = HypLnArgs::new(x.view(), gamma.view(), beta.view(), HypLnConfig::new(1.0))?;
/// let fwd = Cpu.hyp_ln(&args, Dtype::F64)?;
/// assert!(fwd.out.rows().into_iter().all(|r| r.dot(&r).sqrt() < 1.0));
/// let grad = Cpu.hyp_ln_grad(&args, Array2::ones((2, 4)).view(), Dtype::F64)?;
/// assert_eq!(grad.dgamma.len(), 4);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait HypLn {
    /// y, out and a for every row, computed in `dtype`.
    fn hyp_ln(&self, args: &HypLnArgs<'_>, dtype: Dtype) -> Result<HypLnOut>;

    /// The exact gradient given the upstream `g` = ∂L/∂out, (R, D).
    fn hyp_ln_grad(
        &self,
        args: &HypLnArgs<'_>,
        g: ArrayView2<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypLnGrad>;
}

impl HypLn for Cpu {
    fn hyp_ln(&self, args: &HypLnArgs<'_>, dtype: Dtype) -> Result<HypLnOut> {
        let out = match dtype {
            Dtype::F64 => forward::<f64>(args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward::<f32>(args, dtype),
        };
        out.check(dtype)?;
        Ok(out)
    }

    fn hyp_ln_grad(
        &self,
        args: &HypLnArgs<'_>,
        g: ArrayView2<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypLnGrad> {
        args.check_grad(&g)?;
        let grad = match dtype {
            Dtype::F64 => backward::<f64>(args, g, dtype),
            Dtype::F32 | Dtype::Bf16 => backward::<f32>(args, g, dtype),
        };
        grad.check(dtype)?;
        Ok(grad)
    }
}

/// Fails when a result is not finite, which finite inputs give only when they overflow the
/// precision: the error names `x` and the result.
pub fn check_result<D: ndarray::Dimension>(
    result: &'static str,
    v: &ndarray::ArrayView<'_, f64, D>,
    dtype: Dtype,
) -> Result<()> {
    match v.indexed_iter().find(|(_, e)| !e.is_finite()) {
        Some((ix, e)) => Err(Error::Domain {
            op: OP,
            arg: "x",
            rule: format!(
                "overflows {dtype}: result `{result}` is {e} at {:?}; scale the input down",
                ndarray::IntoDimension::into_dimension(ix).slice()
            ),
        }),
        None => Ok(()),
    }
}

impl HypLnOut {
    /// [`check_result`] on every result.
    pub fn check(&self, dtype: Dtype) -> Result<()> {
        check_result("y", &self.y.view(), dtype)?;
        check_result("out", &self.out.view(), dtype)?;
        check_result("a", &self.a.view(), dtype)
    }
}

impl HypLnGrad {
    /// [`check_result`] on every gradient.
    pub fn check(&self, dtype: Dtype) -> Result<()> {
        check_result("dx", &self.dx.view(), dtype)?;
        check_result("dgamma", &self.dgamma.view(), dtype)?;
        check_result("dbeta_ln", &self.dbeta_ln.view(), dtype)?;
        check_result("dc", &ndarray::arr0(self.dc).view(), dtype)
    }
}

#[cfg(test)]
mod tests;
