//! Kernel modules loaded on first use (the hyperbolic families `hyp_ln`, `lin_attn`, `hyp_dist`),
//! so that a family needs no field in [`Gpu`]. A loaded module lives as long as the process, like
//! the [`Gpu`] whose context it was loaded into (that context is never destroyed).

use std::sync::OnceLock;

use cust::module::Module;
use muse_reference::{Error, Result};

use crate::device::{err, Gpu};

/// A cubin and its module, loaded on the first [`LazyModule::get`].
pub(crate) struct LazyModule {
    cell: OnceLock<std::result::Result<Module, String>>,
    cubin: &'static [u8],
    name: &'static str,
}

impl LazyModule {
    /// The module of `cubin` (file stem `name`), not loaded yet.
    pub(crate) const fn new(cubin: &'static [u8], name: &'static str) -> Self {
        Self {
            cell: OnceLock::new(),
            cubin,
            name,
        }
    }

    /// The loaded module. `_gpu` proves that the context is current on this thread
    /// ([`Gpu::get`] makes it so).
    pub(crate) fn get(&'static self, _gpu: &Gpu) -> Result<&'static Module> {
        self.cell
            .get_or_init(|| {
                if self.cubin.is_empty() {
                    return Err(format!(
                        "cuda: kernel module `{}` is empty: this binary was built with `ci-check` (type-check only); rebuild without it",
                        self.name
                    ));
                }
                Module::from_cubin(self.cubin, &[]).map_err(|e| {
                    err(
                        &format!("loading module `{}` (sm_90 cubin; does the device have compute capability 9.0?)", self.name),
                        e,
                    )
                    .to_string()
                })
            })
            .as_ref()
            .map_err(|message| Error::Backend {
                backend: "cuda",
                message: message.clone(),
            })
    }
}
