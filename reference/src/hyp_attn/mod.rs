//! Hyperbolic attention (design: `shared/design/hyperbolic.md` §3): scores
//! −β·d_c(exp0 q_i, exp0 k_j), softmax over the visible keys, V aggregated in the tangent space;
//! outputs o and the log-sum-exp. Masks none, causal (bottom-right aligned) and block-causal
//! window W, optional per-batch key lengths, any head dim and Dv ≠ D.
//!
//! - [`forward`]: the reference forward, row by row in O(M) memory per row;
//! - [`backward`]: the exact backward (§3.4) with gradients for q, k, v, c and β;
//! - [`Form`]: the default law-of-cosines distance and the original's compat distances (§3.5).
//!
//! Other faces of this family: `crates/muse-cuda/src/hyp_attn*.rs` (launchers),
//! `crates/muse-cuda/kernels/hyp_attn*.cu`, `tests/hyp_attn*.rs`, `fixtures/hyperbolic/gen.py`,
//! `crates/muse-cli/src/cmd/attention.rs` (`muse attention`).

pub mod backward;
pub mod forward;

use ndarray::{Array3, Array4, ArrayView4};

use crate::poincare::{check_finite, check_nonempty, Curvature};
use crate::{Cpu, Dtype, Error, Result};

pub(crate) const OP: &str = "hyp_attn";

/// Which keys a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Every key (up to the batch's length).
    None,
    /// Key j is visible from query i when j ≤ i + L − N, L the batch's key count (bottom-right
    /// aligned, so decoding N new queries against M cached keys works).
    Causal,
    /// Block-causal window: j ∈ [⌊i/W⌋·W, i] (needs N = M), the language model's local attention.
    Window(usize),
}

impl Mask {
    /// `none`, `causal` or `window:W`, as on the command line.
    pub fn name(self) -> String {
        match self {
            Mask::None => "none".into(),
            Mask::Causal => "causal".into(),
            Mask::Window(w) => format!("window:{w}"),
        }
    }
}

impl std::str::FromStr for Mask {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Mask::None),
            "causal" => Ok(Mask::Causal),
            _ => match s.strip_prefix("window:") {
                Some(w) => w.parse().map(Mask::Window).map_err(|_| {
                    format!("mask `{s}`: the window W must be an integer, e.g. `window:64`")
                }),
                None => Err(format!(
                    "unknown mask `{s}`: expected `none`, `causal` or `window:W`"
                )),
            },
        }
    }
}

/// How the distance of a (query, key) pair is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Form {
    /// d(exp0 q, exp0 k) from the tangent vectors by the law of cosines (§2.3), s‖·‖ capped at
    /// A_MAX = 15: the exact maths, and the default.
    #[default]
    Exact,
    /// Compat: the original's 'fast' kernel before `dd0c041` (profile `bench`, §3.5) on raw q, k:
    /// d = √(max(‖q‖² − 2q·k + ‖k‖², 0) + 1e-8)·√(1 + c(‖q‖² + ‖k‖²)). Not a distance.
    FastBench,
    /// Compat: the original's flash kernel (`flash_hyperbolic_triton.py`): exp0 with its ε
    /// (‖q‖ = √(‖q‖² + 1e-6), tanh(min(s‖q‖, 15))/(s‖q‖ + 1e-6)), then the ball form with the
    /// denominator clamped at 1e-6 and acosh(X) = ln(X + √(X² − 1 + 1e-6)), X ≥ 1 + 1e-6:
    /// d(x, x) ≈ 1.73e-3/√c, and saturation once s‖q‖ ≳ 7 in f32.
    Flash,
}

impl Form {
    /// `exact`, `fast_bench` or `flash`.
    pub fn name(self) -> &'static str {
        match self {
            Form::Exact => "exact",
            Form::FastBench => "fast_bench",
            Form::Flash => "flash",
        }
    }
}

impl std::str::FromStr for Form {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exact" => Ok(Form::Exact),
            "fast_bench" | "fast-bench" => Ok(Form::FastBench),
            "flash" => Ok(Form::Flash),
            _ => Err(format!(
                "unknown form `{s}`: expected `exact`, `fast_bench` or `flash`"
            )),
        }
    }
}

/// Checked arguments of one hyperbolic attention call; every backend takes these, so all reject
/// bad input with the same message.
///
/// ```
/// use muse_reference::hyp_attn::{HypAttnArgs, Mask};
/// let q = ndarray::Array4::from_elem((1, 2, 4, 8), 0.1);
/// let v = ndarray::Array4::from_elem((1, 2, 4, 3), 1.0);
/// let args = HypAttnArgs::new(q.view(), q.view(), v.view(), 0.693, 1.0, Mask::Causal)?;
/// assert_eq!(args.dims(), (1, 2, 4, 4, 8, 3));
/// assert!(HypAttnArgs::new(q.view(), q.view(), v.view(), 0.0, 1.0, Mask::None).is_err());
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HypAttnArgs<'a> {
    q: ArrayView4<'a, f64>,
    k: ArrayView4<'a, f64>,
    v: ArrayView4<'a, f64>,
    c: Curvature,
    beta: f64,
    mask: Mask,
    lengths: Option<Vec<usize>>,
    form: Form,
}

fn empty(arg: &'static str, dim: &'static str, shape: &[usize]) -> Error {
    Error::Empty {
        op: OP,
        arg,
        dim,
        shape: shape.to_vec(),
    }
}

impl<'a> HypAttnArgs<'a> {
    /// Validates q (B, H, N, D), k (B, H, M, D), v (B, H, M, Dv) (every dimension ≥ 1), finite
    /// inputs, c > 0 finite, β finite, and the mask (W ≥ 1 and N = M for a window).
    pub fn new(
        q: ArrayView4<'a, f64>,
        k: ArrayView4<'a, f64>,
        v: ArrayView4<'a, f64>,
        c: f64,
        beta: f64,
        mask: Mask,
    ) -> Result<Self> {
        check_nonempty(OP, "q", &["B", "H", "N", "D"], q.shape())?;
        let (b, h, n, d) = q.dim();
        let (kb, kh, m, kd) = k.dim();
        if m == 0 {
            return Err(empty("k", "M", k.shape()));
        }
        if (kb, kh, kd) != (b, h, d) {
            return Err(Error::Shape {
                op: OP,
                arg: "k",
                expected: format!("[B, H, M, D] = [{b}, {h}, M, {d}] (B, H and D as `q`)"),
                got: k.shape().to_vec(),
            });
        }
        let (vb, vh, vm, dv) = v.dim();
        if dv == 0 {
            return Err(empty("v", "Dv", v.shape()));
        }
        if (vb, vh, vm) != (b, h, m) {
            return Err(Error::Shape {
                op: OP,
                arg: "v",
                expected: format!("[B, H, M, Dv] = [{b}, {h}, {m}, Dv] (B, H and M as `k`)"),
                got: v.shape().to_vec(),
            });
        }
        let c = Curvature::named(OP, "c", c)?;
        if !beta.is_finite() {
            return Err(Error::Domain {
                op: OP,
                arg: "beta",
                rule: format!("(the inverse temperature) must be finite, got {beta}"),
            });
        }
        if let Mask::Window(w) = mask {
            if w == 0 {
                return Err(Error::Domain {
                    op: OP,
                    arg: "mask",
                    rule: "`window:W` needs W >= 1, got W = 0".into(),
                });
            }
            if n != m {
                return Err(Error::Domain {
                    op: OP,
                    arg: "mask",
                    rule: format!(
                        "`window:{w}` needs as many keys as queries (N = M), got N = {n}, M = {m}"
                    ),
                });
            }
        }
        for (arg, x) in [("q", &q), ("k", &k), ("v", &v)] {
            check_finite(OP, arg, x)?;
        }
        Ok(Self {
            q,
            k,
            v,
            c,
            beta,
            mask,
            lengths: None,
            form: Form::Exact,
        })
    }

    /// Restricts batch b to its first `lengths[b]` keys (padding); one entry per batch, each ≤ M.
    pub fn with_lengths(mut self, lengths: Vec<usize>) -> Result<Self> {
        let (b, m) = (self.q.dim().0, self.k.dim().2);
        if lengths.len() != b {
            return Err(Error::Shape {
                op: OP,
                arg: "lengths",
                expected: format!("[B] = [{b}]"),
                got: vec![lengths.len()],
            });
        }
        if let Some((i, &l)) = lengths.iter().enumerate().find(|(_, &l)| l > m) {
            return Err(Error::Domain {
                op: OP,
                arg: "lengths",
                rule: format!("must be at most M = {m}, got lengths[{i}] = {l}"),
            });
        }
        self.lengths = Some(lengths);
        Ok(self)
    }

    /// Selects a distance form (default [`Form::Exact`]).
    pub fn with_form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// (B, H, N, M, D, Dv).
    pub fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let (b, h, n, d) = self.q.dim();
        (b, h, n, self.k.dim().2, d, self.v.dim().3)
    }
    /// Queries (B, H, N, D), tangent vectors.
    pub fn q(&self) -> ArrayView4<'a, f64> {
        self.q
    }
    /// Keys (B, H, M, D), tangent vectors.
    pub fn k(&self) -> ArrayView4<'a, f64> {
        self.k
    }
    /// Values (B, H, M, Dv), tangent vectors.
    pub fn v(&self) -> ArrayView4<'a, f64> {
        self.v
    }
    /// The curvature.
    pub fn curvature(&self) -> Curvature {
        self.c
    }
    /// β.
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// The mask.
    pub fn mask(&self) -> Mask {
        self.mask
    }
    /// Per-batch key lengths, if any.
    pub fn lengths(&self) -> Option<&[usize]> {
        self.lengths.as_deref()
    }
    /// The distance form.
    pub fn form(&self) -> Form {
        self.form
    }

    /// Keys `[lo, hi)` visible from query `i` of batch `b` (empty when `lo >= hi`).
    pub fn visible(&self, b: usize, i: usize) -> (usize, usize) {
        let (_, _, n, m, _, _) = self.dims();
        let len = self.lengths.as_ref().map_or(m, |l| l[b]);
        match self.mask {
            Mask::None => (0, len),
            Mask::Causal => (0, (i + 1 + len).saturating_sub(n).min(len)),
            Mask::Window(w) => ((i / w) * w, (i + 1).min(len)),
        }
    }

    /// Rejects an upstream gradient that is not (B, H, N, Dv) or holds NaN/±inf.
    pub fn check_d_o(&self, d_o: &ArrayView4<'_, f64>) -> Result<()> {
        let (b, h, n, _, _, dv) = self.dims();
        if d_o.dim() != (b, h, n, dv) {
            return Err(Error::Shape {
                op: OP,
                arg: "d_o",
                expected: format!("[B, H, N, Dv] = [{b}, {h}, {n}, {dv}]"),
                got: d_o.shape().to_vec(),
            });
        }
        check_finite(OP, "d_o", d_o)
    }
}

/// Outputs of the forward: o (B, H, N, Dv) and the log-sum-exp of the scores (B, H, N), with
/// o = 0 and lse = −∞ for a row that sees no key.
#[derive(Debug, Clone, PartialEq)]
pub struct HypAttnOut {
    /// The attention output, tangent vectors.
    pub o: Array4<f64>,
    /// ln Σ_j exp(−β d_ij) over the visible keys.
    pub lse: Array3<f64>,
}

/// Gradients of a real loss L with respect to every input.
#[derive(Debug, Clone, PartialEq)]
pub struct HypAttnGrad {
    /// ∂L/∂q, (B, H, N, D).
    pub dq: Array4<f64>,
    /// ∂L/∂k, (B, H, M, D).
    pub dk: Array4<f64>,
    /// ∂L/∂v, (B, H, M, Dv).
    pub dv: Array4<f64>,
    /// ∂L/∂c.
    pub dc: f64,
    /// ∂L/∂β.
    pub dbeta: f64,
}

/// Hyperbolic attention on a backend.
///
/// ```
/// use muse_reference::hyp_attn::{HypAttn, HypAttnArgs, Mask};
/// use muse_reference::{Cpu, Dtype};
/// let q = ndarray::Array4::from_elem((1, 1, 3, 4), 0.2);
/// let v = ndarray::Array4::from_shape_fn((1, 1, 3, 2), |(_, _, j, e)| (j + e) as f64);
/// let args = HypAttnArgs::new(q.view(), q.view(), v.view(), 1.0, 1.0, Mask::Causal)?;
/// let out = Cpu.hyp_attn(&args, Dtype::F64)?;
/// // Equal keys: a uniform average of the visible values.
/// assert!((out.o[[0, 0, 2, 0]] - 1.0).abs() < 1e-15);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub trait HypAttn {
    /// Forward pass with inputs rounded to `dtype` (bf16: geometry in f32).
    fn hyp_attn(&self, args: &HypAttnArgs<'_>, dtype: Dtype) -> Result<HypAttnOut>;
    /// Gradients of L = Σ d_o∘o (the forward is recomputed).
    fn hyp_attn_grad(
        &self,
        args: &HypAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypAttnGrad>;
}

impl HypAttn for Cpu {
    fn hyp_attn(&self, args: &HypAttnArgs<'_>, dtype: Dtype) -> Result<HypAttnOut> {
        Ok(match dtype {
            Dtype::F64 => forward::forward::<f64>(args, dtype),
            Dtype::F32 | Dtype::Bf16 => forward::forward::<f32>(args, dtype),
        })
    }

    fn hyp_attn_grad(
        &self,
        args: &HypAttnArgs<'_>,
        d_o: ArrayView4<'_, f64>,
        dtype: Dtype,
    ) -> Result<HypAttnGrad> {
        args.check_d_o(&d_o)?;
        if args.form() != Form::Exact {
            return Err(Error::Unsupported {
                op: OP,
                backend: "cpu",
                what: format!(
                    "the backward of the compat form `{}` (only the exact form has one)",
                    args.form().name()
                ),
            });
        }
        Ok(match dtype {
            Dtype::F64 => backward::backward::<f64>(args, d_o, dtype),
            Dtype::F32 | Dtype::Bf16 => backward::backward::<f32>(args, d_o, dtype),
        })
    }
}

#[cfg(test)]
mod tests;
