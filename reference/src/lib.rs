//! CPU reference of every muse kernel: plain `ndarray` code, float64 where it is the oracle.
//!
//! Each kernel family is one module (`bk_core`); its CUDA twin lives in `muse-cuda` under the same
//! stem. The op traits defined here ([`bk_core::BkCore`]) are the parity contract every backend
//! implements, so the same test body runs on [`Cpu`] and on the CUDA backend.
#![deny(missing_docs)]
#![deny(unsafe_code)] // not `forbid`: ndarray's `s!` expands to an inner `allow`

pub mod acosh_lut;
pub mod baseline;
mod bf16;
pub mod bk_core;
pub mod dense;
mod elem;
mod error;
pub mod hyp_attn;
pub mod hyp_dist;
pub mod hyp_int8;
pub mod hyp_ln;
pub mod kv4;
pub mod lin_attn;
pub mod memopt;
pub mod model;
pub mod poincare;
pub mod quant;
mod rng;
pub mod sparse_attn;
#[cfg(test)]
mod testing;
pub mod w4a8;

pub use bf16::bf16_from_f64;
pub use elem::{Dtype, Elem, Precision};
pub use error::{Error, Result};
pub use rng::splitmix64;

/// The CPU backend: runs the reference implementation on the host.
///
/// ```
/// use muse_reference::{Backend, Cpu};
/// assert_eq!(Cpu::NAME, "cpu");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

/// A device that implements every kernel family.
pub trait Backend:
    bk_core::BkCore
    + poincare::Poincare
    + hyp_attn::HypAttn
    + hyp_ln::HypLn
    + hyp_dist::HypDist
    + lin_attn::LinAttn
    + kv4::Kv4
    + Sync
{
    /// Short name used in test ids, bench ids and report rows: `"cpu"` or `"cuda"`.
    const NAME: &'static str;
    /// Human-readable device description for reports (CPU model, GPU name and driver).
    fn device(&self) -> String;
}

impl Backend for Cpu {
    const NAME: &'static str = "cpu";
    fn device(&self) -> String {
        cpu_model()
    }
}

/// The host CPU's model name and logical core count, e.g. `"AMD EPYC 9654 (2 threads)"`.
pub fn cpu_model() -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{name} ({threads} threads)")
}
