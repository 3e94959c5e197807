//! Device slabs for `muse-pool`: each slab is one tracked `cuMemAlloc` ([`Gpu::alloc`], so the
//! allocation peak the memory benchmarks read counts the pool's reserve), and the pool carves
//! 256-B-aligned blocks from it on the host. Addresses from the driver are 512-B aligned.
//!
//! ```no_run
//! use muse_cuda::{pool::DeviceSlabs, Cuda};
//! let gpu = Cuda::new()?.gpu()?;
//! let pool = muse_pool::Pool::new(DeviceSlabs::new(gpu));
//! let block = pool.alloc(1 << 20).map_err(|e| muse_reference::Error::Backend { backend: "cuda", message: e.to_string() })?;
//! assert_eq!(block.addr() % 256, 0);
//! # Ok::<(), muse_reference::Error>(())
//! ```

use std::collections::HashMap;

use muse_pool::{PoolError, SlabSource};

use crate::device::{Buf, Gpu};

/// A [`SlabSource`] over device memory; dropping it frees every slab still held.
pub struct DeviceSlabs {
    gpu: &'static Gpu,
    slabs: HashMap<u64, Buf<u8>>,
}

impl DeviceSlabs {
    /// A source allocating on `gpu`.
    pub fn new(gpu: &'static Gpu) -> Self {
        Self {
            gpu,
            slabs: HashMap::new(),
        }
    }

    /// Slabs currently held.
    pub fn live_slabs(&self) -> usize {
        self.slabs.len()
    }
}

impl SlabSource for DeviceSlabs {
    fn alloc_slab(&mut self, bytes: usize) -> muse_pool::Result<u64> {
        let buf = self.gpu.alloc::<u8>(bytes).map_err(|e| PoolError::Source {
            slab_bytes: bytes,
            message: e.to_string(),
        })?;
        let base = buf.ptr().as_raw();
        self.slabs.insert(base, buf);
        Ok(base)
    }

    fn free_slab(&mut self, base: u64, _bytes: usize) {
        self.slabs.remove(&base);
    }
}
