//! The model's structure, defined once (design model.md §2.2): every backend implements the steps
//! ([`ModelSteps`]) and [`run`] composes them, so the CPU reference and the CUDA path cannot
//! disagree on the order of the layers, only on how each step computes.
//!
//! ```text
//! h = embed(ids)                                   HTT(ids) + P[0..N)
//! for each block l:
//!     x    = pre_norm(l, h)                        LN_l(h)
//!     g    = gate(l, x)                            σ(γ·|Im G|), G = BK-Core(H0 + diag v(x), z)
//!     loc  = local(l, x)                           windowed hyperbolic attention
//!     glob = global(l, x)                          AR-SSM
//!     h    = mix_norm_residual(l, h, loc, glob, g) h + LN(g⊙loc + (1 − g)⊙glob)
//! logits = decode(final_norm(h))                   the tied HTT decoder
//! ```

use crate::Result;

/// One backend's implementation of the model's steps. `Act` is a (B, N, D) activation (an owned
/// array on the CPU; a workspace slot on the GPU), `Gate` the (B, N) gate, `Logits` the output.
pub trait ModelSteps {
    /// A (B, N, D) activation.
    type Act;
    /// The (B, N) gate of a block.
    type Gate;
    /// The (B, N, V) logits.
    type Logits;
    /// h = HTT(ids) + positions.
    fn embed(&mut self) -> Result<Self::Act>;
    /// x = LN_l(h).
    fn pre_norm(&mut self, layer: usize, h: &Self::Act) -> Result<Self::Act>;
    /// g = σ(γ·|Im G_ii|) of block `layer` on x.
    fn gate(&mut self, layer: usize, x: &Self::Act) -> Result<Self::Gate>;
    /// The windowed hyperbolic attention of block `layer` on x.
    fn local(&mut self, layer: usize, x: &Self::Act) -> Result<Self::Act>;
    /// The AR-SSM of block `layer` on x.
    fn global(&mut self, layer: usize, x: &Self::Act) -> Result<Self::Act>;
    /// h + LN(g⊙local + (1 − g)⊙global) of block `layer`.
    fn mix_norm_residual(
        &mut self,
        layer: usize,
        h: Self::Act,
        local: Self::Act,
        global: Self::Act,
        gate: Self::Gate,
    ) -> Result<Self::Act>;
    /// The final LayerNorm.
    fn final_norm(&mut self, h: &Self::Act) -> Result<Self::Act>;
    /// The tied decoder.
    fn decode(&mut self, x: &Self::Act) -> Result<Self::Logits>;
}

/// The forward pass of `layers` blocks on `steps` (the one definition of the model's structure).
pub fn run<S: ModelSteps>(steps: &mut S, layers: usize) -> Result<S::Logits> {
    let mut h = steps.embed()?;
    for l in 0..layers {
        let x = steps.pre_norm(l, &h)?;
        let g = steps.gate(l, &x)?;
        let local = steps.local(l, &x)?;
        let global = steps.global(l, &x)?;
        h = steps.mix_norm_residual(l, h, local, global, g)?;
    }
    let x = steps.final_norm(&h)?;
    steps.decode(&x)
}
