//! The verification suite: every registered case, run on a backend, turned into report records.
//!
//! A case is data ([`Case`]); [`run`] executes it on any [`Backend`], so the CPU and CUDA rows of
//! the report come from the same code.

pub mod bk_core;
pub mod checks;
pub mod compat;

use crate::{fixtures::Manifest, Record};
use muse_reference::Backend;

/// One registered verification case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case id, unique within the suite.
    pub name: String,
    /// What runs.
    pub spec: Spec,
}

/// What a case runs.
#[derive(Debug, Clone)]
pub enum Spec {
    /// Exact forward (and gradient, where the fixture has one) against a golden fixture.
    Fixture(String),
    /// Exact forward and gradient on generated inputs against the CPU f64 reference (and the dense
    /// inverse for small N).
    Synthetic(bk_core::Synthetic),
    /// The original's compat modes against the fixture's independent emulation (CPU only).
    Compat(String),
}

impl Case {
    /// Whether only the CPU reference implements this case.
    pub fn cpu_only(&self) -> bool {
        matches!(self.spec, Spec::Compat(_))
    }
}

/// Every case of the suite, fixtures first.
pub fn registry(manifest: &Manifest) -> Vec<Case> {
    let mut cases = Vec::new();
    for fx in manifest.family("bk_core") {
        if fx.has("g_re") {
            cases.push(Case {
                name: fx.name.clone(),
                spec: Spec::Fixture(fx.name.clone()),
            });
        }
    }
    for s in bk_core::synthetic_cases() {
        cases.push(Case {
            name: s.name(),
            spec: Spec::Synthetic(s),
        });
    }
    for fx in manifest.family("bk_core") {
        if compat::has_compat(fx) {
            cases.push(Case {
                name: format!("compat/{}", fx.name),
                spec: Spec::Compat(fx.name.clone()),
            });
        }
    }
    cases
}

/// Runs one case on `be`, returning its records.
pub fn run<B: Backend>(be: &B, case: &Case, manifest: &Manifest) -> crate::Result<Vec<Record>> {
    match &case.spec {
        Spec::Fixture(name) => bk_core::fixture(be, manifest, manifest.case(name)?),
        Spec::Synthetic(s) => bk_core::synthetic(be, s),
        Spec::Compat(name) => compat::run(manifest, manifest.case(name)?),
    }
}

/// The record written when a case errors out instead of producing results.
pub fn error_record(backend: &str, case: &Case, shape: &[usize]) -> Record {
    let site = crate::report::Site {
        kernel: "bk_core",
        backend,
        case: &case.name,
        shape,
        dtype: "-",
    };
    site.record("completed", 0.0, "", Some(crate::Target::AtLeast(1.0)))
}
