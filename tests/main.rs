//! The one integration-test binary: every test body runs on every backend (`::cpu`, `::cuda`).
//! Without the `cuda` feature the CUDA halves are listed as ignored, with the reason.

mod common;

// Forward pass against the dense oracle, closed forms and precision.
mod bk_core;
// Agreement with the Python oracle's golden fixtures.
mod bk_core_fixtures;
// Exact gradient against the dense formula and finite differences.
mod bk_core_grad;
// Bad input: typed errors naming the argument.
mod bk_core_errors;
// The original's compat modes and hybrid gradient.
mod bk_core_compat;
// The Poincaré-ball core: fixtures, out-of-ball errors, d(x, x) = 0.
mod poincare;
// Hyperbolic attention: fixtures, generated shapes, masks, errors.
mod hyp_attn;
// Helpers of the hyperbolic families' tests.
mod hyp_common;
// Fused LayerNorm + hyperbolic projection.
mod hyp_ln;
// Pairwise Poincaré distance matrix.
mod hyp_dist;
// Tangent-space linear attention.
mod lin_attn;
// The hyperbolic families against the numpy/mpmath fixtures.
mod hyp_fixtures;
// The quantised families (kv4, INT8, W4A8, acosh LUT) against their integer/mpmath oracle.
/// The language model's registered cases.
mod model;
// The KV cache on the GPU against the reference (codec bit for bit, decode vs dense f64).
mod kv4;
// The INT8 distance matrix on the GPU against its codes and the §8.1 bound.
mod hyp_int8;
// The W4A8 small-M GEMM on the GPU against the integer reference on its codes.
mod quant_fixtures;
mod w4a8;
// Block-skip sparse attention on the GPU against the reference on the same lists.
mod sparse_attn;
