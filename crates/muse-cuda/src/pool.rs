//! The device memory pool (design `hyperbolic.md` §10): [`DeviceSlabs`], a `muse-pool` slab
//! source whose slabs are tracked driver allocations ([`Gpu::alloc_driver`], so the allocation
//! peak the memory benchmarks read counts the pool's reserve), the GPU's one pool
//! ([`DevicePool`], [`Gpu::pool`]) and the per-thread [`Pooled`] scope ([`Gpu::pooled`]) that
//! routes [`Gpu::alloc`] and [`Gpu::upload`] through it. Addresses from the driver are 512-B
//! aligned; the pool carves 256-B-aligned blocks from them on the host.
//!
//! ```no_run
//! use muse_cuda::{pool::DeviceSlabs, Cuda};
//! let gpu = Cuda::new()?.gpu()?;
//! let pool = muse_pool::Pool::new(DeviceSlabs::new(gpu));
//! let block = pool.alloc(1 << 20).map_err(|e| muse_reference::Error::Backend { backend: "cuda", message: e.to_string() })?;
//! assert_eq!(block.addr() % 256, 0);
//! # Ok::<(), muse_reference::Error>(())
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::marker::PhantomData;

use muse_pool::{OwnedBlock, PoolError, SharedPool, SlabSource};

use crate::device::{Buf, Gpu};

/// The pool of the GPU's stream ([`Gpu::pool`]): `Send` blocks, so that buffers holding them
/// can sit in the model's `Mutex`-guarded workspace.
pub type DevicePool = SharedPool<DeviceSlabs>;

/// A block of the [`DevicePool`]; a pooled [`Buf`] holds one and synchronises the stream before
/// giving it back.
pub type DeviceBlock = OwnedBlock<DeviceSlabs>;

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
        // The driver path, whatever the thread's scope: a slab from the pool would recurse.
        let buf = self
            .gpu
            .alloc_driver::<u8>(bytes)
            .map_err(|e| PoolError::Source {
                slab_bytes: bytes,
                message: e.to_string(),
            })?;
        let base = buf.ptr().as_raw();
        self.slabs.insert(base, buf);
        Ok(base)
    }

    fn free_slab(&mut self, base: u64, _bytes: usize) {
        // Dropping the slab's buffer synchronises the stream, then frees it.
        self.slabs.remove(&base);
    }
}

thread_local! {
    /// Live [`Pooled`] scopes on this thread.
    static SCOPES: Cell<usize> = const { Cell::new(0) };
}

/// Whether this thread's allocations go through the pool now.
pub(crate) fn routed() -> bool {
    SCOPES.with(Cell::get) > 0
}

/// While alive, [`Gpu::alloc`] and [`Gpu::upload`] on the thread that made it take blocks of
/// [`Gpu::pool`] instead of calling the driver; from [`Gpu::pooled`]. Scopes nest. It is
/// `!Send`: the routing is per thread (test harnesses run tests on threads of one process, and a
/// scope must not pool another test's allocations), while the buffers made inside it are `Send`.
///
/// ```no_run
/// let gpu = muse_cuda::Gpu::get()?;
/// let outer = gpu.pooled();
/// {
///     let _inner = gpu.pooled();
/// }
/// assert!(gpu.alloc::<f32>(8)?.is_pooled()); // still inside `outer`
/// drop(outer);
/// assert!(!gpu.alloc::<f32>(8)?.is_pooled());
/// # Ok::<(), muse_reference::Error>(())
/// ```
#[must_use = "allocations are pooled only while the scope is alive"]
pub struct Pooled {
    _thread_bound: PhantomData<*const ()>,
}

impl Pooled {
    pub(crate) fn enter() -> Self {
        SCOPES.with(|n| n.set(n.get() + 1));
        Pooled {
            _thread_bound: PhantomData,
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        SCOPES.with(|n| n.set(n.get() - 1));
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pooled({} scopes on this thread)",
            SCOPES.with(Cell::get)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{routed, Pooled};

    #[test]
    fn scopes_nest_and_stay_on_their_thread() {
        assert!(!routed());
        let outer = Pooled::enter();
        let inner = Pooled::enter();
        drop(inner);
        assert!(routed(), "the outer scope is still alive");
        let other = std::thread::spawn(routed).join().expect("thread");
        assert!(!other, "another thread is not routed");
        drop(outer);
        assert!(!routed());
    }
}
