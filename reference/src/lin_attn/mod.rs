//! Tangent-space linear attention core (design hyperbolic.md §9 items 2–3): q, k (B, H, N, d),
//! v (B, H, N, dv), φ = elu + 1; causal (the default)
//! o_i = φ(q_i)·S_i / max(φ(q_i)·z_i, eps) with S_i = Σ_{j≤i} φ(k_j)ᵀv_j and z_i = Σ_{j≤i} φ(k_j);
//! non-causal (compat, the original's form) sums over every j. Forward and exact backward.
//!
//! Everything is one primitive, the masked product out_i = Σ_{j∈mask(i)} (A_i·B_j)·C_j
//! ([`product`]): with v′ = [v, 1] (a ones column), [num, den] = P(φq, φk, v′); with
//! m = max(den, eps) and G = \[dO/m, −⟨dO, o⟩/m·𝟙(den > eps)\] (N × (dv+1)),
//! dq = φ′(q)∘P(G, v′, φk), dk = φ′(k)∘Pᵀ(v′, G, φq), dv = Pᵀ(φk, φq, G[:, :dv]), where Pᵀ
//! uses the transposed mask (j ≥ i). The CPU and the GPU both run the chunked schedule
//! (C = 64); [`LinAttnSchedule::Recurrent`] is the running-state form the tests compare it with.
//!
//! Other faces of this family: `crates/muse-cuda/src/lin_attn.rs` (launchers),
//! `crates/muse-cuda/kernels/lin_attn.cu`, `tests/lin_attn.rs`, `fixtures/hyperbolic/`
//! (cases `causal_*`, `noncausal_*`).

mod cpu;
pub mod product;
#[cfg(test)]
mod tests;

pub use cpu::{backward, forward};

use ndarray::{Array4, ArrayView4};

use crate::poincare::{check_finite, check_nonempty};
use crate::{Cpu, Dtype, Error, Result};

pub(crate) const OP: &str = "lin_attn";

/// Default floor of the normaliser φ(q_i)·z_i (design §9).
pub const EPS_DEFAULT: f64 = 1e-6;
/// Rows per chunk of the chunked schedule (design §9: C = 64).
pub const CHUNK: usize = 64;

/// How the sums over keys are evaluated (same maths, different rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LinAttnSchedule {
    /// Chunks of [`CHUNK`] rows: masked (φQφKᵀ)·V inside a chunk, the running state across
    /// chunks (the GPU's schedule; the default).
    #[default]
    Chunked,
    /// One running state S, z over the rows in order.
    Recurrent,
}

/// Scalar settings: causal or not, and the normaliser floor.
///
/// ```
/// use muse_reference::lin_attn::LinAttnConfig;
/// let cfg = LinAttnConfig::default();
/// assert!(cfg.causal && cfg.eps == 1e-6);
/// assert!(!LinAttnConfig::non_causal().causal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinAttnConfig {
    /// Sum over j ≤ i (true, the default) or over every j (the original's compat form).
    pub causal: bool,
    /// Floor of the normaliser, > 0.
    pub eps: f64,
}

impl Default for LinAttnConfig {
    fn default() -> Self {
        Self {
            causal: true,
            eps: EPS_DEFAULT,
        }
    }
}

impl LinAttnConfig {
    /// The non-causal compat form.
    pub fn non_causal() -> Self {
        Self {
            causal: false,
            ..Self::default()
        }
    }
    /// With this normaliser floor.
    pub fn eps(self, eps: f64) -> Self {
        Self { eps, ..self }
    }
}

/// Checked arguments of one linear-attention call.
///
/// ```
/// use muse_reference::lin_attn::{LinAttnArgs, LinAttnConfig};
/// use ndarray::Array4;
/// let (q, v) = (Array4::from_elem((1, 2, 5, 3), 0.1), Array4::from_elem((1, 2, 5, 4), 1.0));
/// let args = LinAttnArgs::new(q.view(), q.view(), v.view(), LinAttnConfig::default())?;
/// assert_eq!((args.n(), args.d(), args.dv()), (5, 3, 4));
/// let short = Array4::from_elem((1, 2, 4, 4), 1.0);
/// let e = LinAttnArgs::new(q.view(), q.view(), short.view(), LinAttnConfig::default()).unwrap_err();
/// assert_eq!(e.to_string(), "lin_attn: `v` must have shape [B, H, N, dv] = [1, 2, 5, dv] (as `q`), got [1, 2, 4, 4]");
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LinAttnArgs<'a> {
    q: ArrayView4<'a, f64>,
    k: ArrayView4<'a, f64>,
    v: ArrayView4<'a, f64>,
    cfg: LinAttnConfig,
}

impl<'a> LinAttnArgs<'a> {
    /// Validates shapes (q, k (B, H, N, d) alike, v (B, H, N, dv), every size ≥ 1), finiteness
    /// and eps (finite, > 0).
    pub fn new(
        q: ArrayView4<'a, f64>,
        k: ArrayView4<'a, f64>,
        v: ArrayView4<'a, f64>,
        cfg: LinAttnConfig,
    ) -> Result<Self> {
        check_nonempty(OP, "q", &["B", "H", "N", "d"], q.shape())?;
        check_nonempty(OP, "v", &["B", "H", "N", "dv"], v.shape())?;
        let (b, h, n, _) = q.dim();
        if k.dim() != q.dim() {
            return Err(Error::Shape {
                op: OP,
                arg: "k",
                expected: format!("[B, H, N, d] = {:?} (as `q`)", q.shape()),
                got: k.shape().to_vec(),
            });
        }
        let (vb, vh, vn, _) = v.dim();
        if (vb, vh, vn) != (b, h, n) {
            return Err(Error::Shape {
                op: OP,
                arg: "v",
                expected: format!("[B, H, N, dv] = [{b}, {h}, {n}, dv] (as `q`)"),
                got: v.shape().to_vec(),
            });
        }
        check_finite(OP, "q", &q)?;
        check_finite(OP, "k", &k)?;
        check_finite(OP, "v", &v)?;
        if !(cfg.eps.is_finite() && cfg.eps > 0.0) {
            return Err(Error::Domain {
                op: OP,
                arg: "eps",
                rule: format!("must be finite and > 0, got {}", cfg.eps),
            });
        }
        Ok(Self { q, k, v, cfg })
    }

    /// Queries (B, H, N, d).
    pub fn q(&self) -> ArrayView4<'a, f64> {
        self.q
    }
    /// Keys (B, H, N, d).
    pub fn k(&self) -> ArrayView4<'a, f64> {
        self.k
    }
    /// Values (B, H, N, dv).
    pub fn v(&self) -> ArrayView4<'a, f64> {
        self.v
    }
    /// The settings.
    pub fn config(&self) -> LinAttnConfig {
        self.cfg
    }
    /// B·H.
    pub fn heads(&self) -> usize {
        self.q.dim().0 * self.q.dim().1
    }
    /// N.
    pub fn n(&self) -> usize {
        self.q.dim().2
    }
    /// d.
    pub fn d(&self) -> usize {
        self.q.dim().3
    }
    /// dv.
    pub fn dv(&self) -> usize {
        self.v.dim().3
    }
    /// The masked product's direction of the forward pass.
    pub fn direction(&self) -> product::Direction {
        if self.cfg.causal {
            product::Direction::Causal
        } else {
            product::Direction::Full
        }
    }
    /// Rejects an upstream gradient dL/do that is not (B, H, N, dv) or holds NaN/±inf.
    pub fn check_grad(&self, d_o: &ArrayView4<'_, f64>) -> Result<()> {
        if d_o.dim() != self.v.dim() {
            return Err(Error::Shape {
                op: OP,
                arg: "d_o",
                expected: format!("[B, H, N, dv] = {:?} (as `v`)", self.v.shape()),
                got: d_o.shape().to_vec(),
            });
        }
        check_finite(OP, "d_o", d_o)
    }
}

/// Gradients of L = Σ d_o∘o.
#[derive(Debug, Clone, PartialEq)]
pub struct LinAttnGrad {
    /// ∂L/∂q, (B, H, N, d).
    pub dq: Array4<f64>,
    /// ∂L/∂k, (B, H, N, d).
    pub dk: Array4<f64>,
    /// ∂L/∂v, (B, H, N, dv).
    pub dv: Array4<f64>,
}

/// Linear attention on a backend.
///
/// ```
/// use muse_reference::lin_attn::{LinAttn, LinAttnArgs, LinAttnConfig};
/// use muse_reference::{Cpu, Dtype};
/// use ndarray::Array4;
/// let q = Array4::from_shape_fn((1, 1, 3, 2), |(_, _, i, j)| 0.1 * (i + j) as f64);
/// let v = Array4::from_shape_fn((1, 1, 3, 1), |(_, _, i, _)| i as f64);
/// let args = LinAttnArgs::new(q.view(), q.view(), v.view(), LinAttnConfig::default())?;
/// let o = Cpu.lin_attn(&args, Dtype::F64)?;
/// assert_eq!(o[[0, 0, 0, 0]], 0.0); // row 0 sees only v_0 = 0
/// let g = Cpu.lin_attn_grad(&args, Array4::ones((1, 1, 3, 1)).view(), Dtype::F64)?;
/// assert_eq!(g.dq.dim(), (1, 1, 3, 2));
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait LinAttn {
    /// o (B, H, N, dv), computed in `dtype` (bf16: inputs rounded, computed in f32).
    fn lin_attn(&self, args: &LinAttnArgs<'_>, dtype: Dtype) -> Result<Array4<f64>>;

    /// dq, dk, dv of L = Σ d_o∘o.
    fn lin_attn_grad(
        &self,
        args: &LinAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<LinAttnGrad>;
}

impl LinAttn for Cpu {
    fn lin_attn(&self, args: &LinAttnArgs<'_>, dtype: Dtype) -> Result<Array4<f64>> {
        let sched = LinAttnSchedule::Chunked;
        let o = match dtype {
            Dtype::F64 => forward::<f64>(args, dtype, sched),
            Dtype::F32 | Dtype::Bf16 => forward::<f32>(args, dtype, sched),
        };
        check_result("o", &o, dtype)?;
        Ok(o)
    }

    fn lin_attn_grad(
        &self,
        args: &LinAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<LinAttnGrad> {
        args.check_grad(&d_o)?;
        let sched = LinAttnSchedule::Chunked;
        let g = match dtype {
            Dtype::F64 => backward::<f64>(args, d_o, dtype, sched),
            Dtype::F32 | Dtype::Bf16 => backward::<f32>(args, d_o, dtype, sched),
        };
        g.check(dtype)?;
        Ok(g)
    }
}

/// Fails when a result is not finite, which finite inputs give only when they overflow the
/// precision (φ(k) = k + 1 grows with k): the error names the inputs and the result.
pub fn check_result(result: &'static str, v: &Array4<f64>, dtype: Dtype) -> Result<()> {
    match v.indexed_iter().find(|(_, e)| !e.is_finite()) {
        Some(((b, h, i, j), e)) => Err(Error::Domain {
            op: OP,
            arg: "q",
            rule: format!(
                "(with `k`, `v`) overflows {dtype}: result `{result}` is {e} at [{b}, {h}, {i}, {j}]; scale the inputs down"
            ),
        }),
        None => Ok(()),
    }
}

impl LinAttnGrad {
    /// [`check_result`] on every gradient.
    pub fn check(&self, dtype: Dtype) -> Result<()> {
        check_result("dq", &self.dq, dtype)?;
        check_result("dk", &self.dk, dtype)?;
        check_result("dv", &self.dv, dtype)
    }
}
