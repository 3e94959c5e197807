//! The verification suite: every registered case, run on a backend, turned into report records.
//!
//! A case is data ([`Case`]); [`run`] executes it on any [`Backend`], so the CPU and CUDA rows of
//! the report come from the same code. The suite is a list of kernel families (the
//! `families!` invocation below); each family module provides its cases and how to run one.
//!
//! # Adding a family
//!
//! For a family with stem `hyp_attn`:
//!
//! 1. write `suite/hyp_attn.rs` (a directory module past ~400 lines) with
//!    - `pub enum Spec` (`Debug + Clone`): what one of its cases runs;
//!    - `pub fn cases(m: &Manifest) -> Vec<(String, Spec)>`: its cases with their unique names,
//!      in report order (fixtures from `m.family("hyp_attn")`, generated inputs from
//!      `crate::cases`);
//!    - `pub fn run<B: Backend>(be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>>`;
//!    - `pub fn cpu_only(spec: &Spec) -> bool`: cases only the CPU reference implements;
//! 2. declare it below (`pub mod hyp_attn;`) and add one line to `families!`, under a `///`
//!    summary: `HypAttn => hyp_attn,`.
//!
//! That yields [`Family`]`::HypAttn`, [`Spec`]`::HypAttn(hyp_attn::Spec)`, its cases in
//! [`registry`] after the families above it, and error records with kernel `hyp_attn`.

pub mod bk_core;
pub mod checks;
pub mod compat;
pub mod hyp_attn;
pub mod hyp_checks;
pub mod hyp_dist;
pub mod hyp_ln;
pub mod kv4;
pub mod lin_attn;
pub mod model;
mod model_grad;
pub mod poincare;
pub mod quant;

use crate::{fixtures::Manifest, Record};
use muse_reference::Backend;

/// Declares the families: for each `Variant => module`, a [`Family`] variant, a [`Spec`] variant
/// wrapping `module::Spec`, and the dispatch to `module::{cases, run, cpu_only}`.
macro_rules! families {
    ($($(#[$doc:meta])* $variant:ident => $module:ident,)+) => {
        /// A kernel family of the suite.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Family {
            $($(#[$doc])* $variant,)+
        }

        impl Family {
            /// Every family, in report order.
            pub const ALL: &'static [Family] = &[$(Family::$variant,)+];

            /// The family's stem, e.g. `bk_core`.
            pub fn stem(self) -> &'static str {
                match self {
                    $(Family::$variant => stringify!($module),)+
                }
            }

            /// The family's cases, in report order.
            pub fn cases(self, manifest: &Manifest) -> Vec<Case> {
                match self {
                    $(Family::$variant => $module::cases(manifest)
                        .into_iter()
                        .map(|(name, spec)| Case { name, spec: Spec::$variant(spec) })
                        .collect(),)+
                }
            }
        }

        /// What a case runs: its family's own spec.
        #[derive(Debug, Clone)]
        pub enum Spec {
            $($(#[$doc])* $variant($module::Spec),)+
        }

        impl Spec {
            /// The family the case belongs to.
            pub fn family(&self) -> Family {
                match self {
                    $(Spec::$variant(_) => Family::$variant,)+
                }
            }

            /// Whether only the CPU reference implements this case.
            pub fn cpu_only(&self) -> bool {
                match self {
                    $(Spec::$variant(s) => $module::cpu_only(s),)+
                }
            }

            /// Runs the case on `be`.
            fn run<B: Backend>(&self, be: &B, manifest: &Manifest) -> crate::Result<Vec<Record>> {
                match self {
                    $(Spec::$variant(s) => $module::run(be, s, manifest),)+
                }
            }
        }
    };
}

// The registry: one line per family, in report order. The next family goes below BK-Core.
families! {
    /// BK-Core: golden fixtures, generated cases and the original's compat modes.
    BkCore => bk_core,
    /// The Poincaré-ball core: every op and VJP on the golden fixtures.
    Poincare => poincare,
    /// Hyperbolic attention: fixtures, generated tensor-core shapes, mask claims.
    HypAttn => hyp_attn,
    /// Fused LayerNorm + hyperbolic projection: fixtures, forward and backward.
    HypLn => hyp_ln,
    /// Tangent-space linear attention: fixtures, forward and backward.
    LinAttn => lin_attn,
    /// Pairwise distance matrix: fixtures, tangent and ball inputs.
    HypDist => hyp_dist,
    /// Quantised families (4-bit KV codec, INT8 distance, W4A8, acosh LUT) against their oracle.
    Quant => quant,
    /// The KV cache on every backend: decode vs f64 on its own cache, held K/V vs the codec.
    Kv4 => kv4,
    /// The language model: layers and forwards against the numpy oracle, parity with the original.
    Model => model,
}

/// One registered verification case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case id, unique within the suite.
    pub name: String,
    /// What runs.
    pub spec: Spec,
}

impl Case {
    /// Whether only the CPU reference implements this case.
    pub fn cpu_only(&self) -> bool {
        self.spec.cpu_only()
    }
}

/// Every case of the suite: family by family, each in its own order.
pub fn registry(manifest: &Manifest) -> Vec<Case> {
    Family::ALL
        .iter()
        .flat_map(|family| family.cases(manifest))
        .collect()
}

/// Runs one case on `be`, returning its records.
pub fn run<B: Backend>(be: &B, case: &Case, manifest: &Manifest) -> crate::Result<Vec<Record>> {
    case.spec.run(be, manifest)
}

/// The record written when a case errors out instead of producing results (kernel: the
/// family's stem).
pub fn error_record(backend: &str, case: &Case, shape: &[usize]) -> Record {
    let site = crate::report::Site {
        kernel: case.spec.family().stem(),
        backend,
        case: &case.name,
        shape,
        dtype: "-",
    };
    site.record("completed", 0.0, "", Some(crate::Target::AtLeast(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_cases_know_their_family() -> crate::Result<()> {
        let m = Manifest::discover()?;
        let cases = registry(&m);
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        for &family in Family::ALL {
            assert!(family.cases(&m).iter().all(|c| c.spec.family() == family));
        }
        let bk = cases.iter().filter(|c| c.spec.family() == Family::BkCore);
        assert!(bk.clone().any(Case::cpu_only) && !bk.clone().all(Case::cpu_only));
        let error = error_record("cuda", &cases[0], &[]);
        assert_eq!((error.kernel.as_str(), error.pass), ("bk_core", false));
        Ok(())
    }
}
