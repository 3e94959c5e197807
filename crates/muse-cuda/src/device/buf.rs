//! [`Buf`], a device buffer backed by its own driver allocation or by a block of the GPU's pool
//! (`crate::pool`), and [`View`], a bounds-checked borrowed range of one. The public methods
//! work alike for both backings: they go through the buffer's [`DeviceSlice`].

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use cust::memory::bytemuck::Pod;
use cust::memory::{CopyDestination, DeviceBuffer, DeviceCopy, DevicePointer, DeviceSlice};
use muse_reference::{Error, Result};

use super::{err, Gpu};
use crate::pool::DeviceBlock;

/// A device buffer. Its memory is either its own driver allocation ([`Gpu::alloc_driver`],
/// counted in [`Gpu::live_bytes`] while it lives) or a block of the GPU's pool
/// ([`Gpu::pooled`]; the pool's slab counts there, the block in [`Gpu::pool_stats`]).
///
/// Dropping it synchronises the GPU's stream first either way: queued kernels may still use the
/// memory, which the driver would free, or the pool hand to the next allocation.
///
/// ```no_run
/// let gpu = muse_cuda::Gpu::get()?;
/// let mut b = gpu.upload(&[1.0f32, 2.0, 3.0])?;
/// b.copy_from_host(&[4.0])?;
/// assert_eq!((b.len(), b.is_pooled()), (3, false));
/// assert_eq!(b.to_vec()?, [4.0, 2.0, 3.0]);
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub struct Buf<T: DeviceCopy> {
    /// The elements, wherever they live; valid while `owner` is.
    mem: DeviceSlice<T>,
    owner: Owner<T>,
    gpu: &'static Gpu,
}

/// What keeps a [`Buf`]'s memory alive.
enum Owner<T: DeviceCopy> {
    /// Its own `cuMemAlloc`, of `bytes` counted in the GPU's live bytes.
    Driver { _buf: DeviceBuffer<T>, bytes: usize },
    /// A pool block (at least `len · size_of::<T>()` bytes, 256-B aligned).
    Pool { _block: DeviceBlock },
}

impl<T: DeviceCopy> Buf<T> {
    /// Wraps a driver allocation already counted as `bytes` in `gpu`'s live bytes.
    pub(super) fn from_driver(gpu: &'static Gpu, buf: DeviceBuffer<T>, bytes: usize) -> Self {
        Buf {
            mem: *buf,
            owner: Owner::Driver { _buf: buf, bytes },
            gpu,
        }
    }

    /// Wraps a pool block as `len` elements.
    pub(super) fn from_block(gpu: &'static Gpu, block: DeviceBlock, len: usize) -> Self {
        assert!(
            block.requested() >= len * std::mem::size_of::<T>(),
            "a pool block of {} B cannot hold {len} elements",
            block.requested()
        );
        // SAFETY: the block is device memory of at least len·size_of::<T>() bytes (checked above)
        // at a 256-B-aligned address (enough for any element type), owned by `owner` for as long
        // as `mem` is used; nothing else holds it until it drops back into the pool.
        let mem =
            unsafe { DeviceSlice::from_raw_parts(DevicePointer::from_raw(block.addr()), len) };
        Buf {
            mem,
            owner: Owner::Pool { _block: block },
            gpu,
        }
    }

    /// The device pointer for a launch.
    pub fn ptr(&self) -> DevicePointer<T> {
        self.mem.as_device_ptr()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.mem.len()
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }
    /// Whether the memory is a block of the GPU's pool (rather than its own driver allocation).
    pub fn is_pooled(&self) -> bool {
        matches!(self.owner, Owner::Pool { .. })
    }

    /// The whole buffer as a [`View`].
    pub fn view(&self) -> View<'_, T> {
        View {
            ptr: self.ptr(),
            len: self.len(),
            _buf: PhantomData,
        }
    }

    /// Elements `off .. off + len` as a [`View`]; out of range is an error naming the bounds.
    pub fn slice(&self, off: usize, len: usize) -> Result<View<'_, T>> {
        self.view().slice(off, len)
    }
}

/// A borrowed range of a [`Buf`]: a device pointer and a length, bounds-checked when made and
/// unable to outlive the buffer (the launchers of the training kernels take views, so that a
/// gradient can be written straight into its slot of the flat gradient buffer).
///
/// ```no_run
/// let gpu = muse_cuda::Gpu::get()?;
/// let b = gpu.alloc::<f32>(8)?;
/// let v = b.slice(2, 4)?;
/// assert_eq!((v.len(), v.slice(1, 3)?.len()), (4, 3));
/// assert!(v.slice(1, 4).is_err());
/// # Ok::<(), muse_reference::Error>(())
/// ```
pub struct View<'a, T: DeviceCopy> {
    ptr: DevicePointer<T>,
    len: usize,
    _buf: PhantomData<&'a Buf<T>>,
}

impl<T: DeviceCopy> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: DeviceCopy> Copy for View<'_, T> {}

impl<'a, T: DeviceCopy> View<'a, T> {
    /// The device pointer for a launch.
    pub fn ptr(&self) -> DevicePointer<T> {
        self.ptr
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Elements `off .. off + len` of this view.
    pub fn slice(&self, off: usize, len: usize) -> Result<View<'a, T>> {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::Backend {
                backend: "cuda",
                message: format!(
                    "device view [{off}, {off} + {len}) out of a range of {}",
                    self.len
                ),
            });
        }
        Ok(View {
            ptr: self.ptr.wrapping_add(off),
            len,
            _buf: PhantomData,
        })
    }
}

impl<T: DeviceCopy + Pod> Buf<T> {
    /// Fills the buffer with all-ones bytes, a NaN in both f32 and f64, so that an element no
    /// kernel wrote is visible.
    pub fn poison(&mut self) -> Result<()> {
        self.fill_async(0xff)
    }

    /// Sets every byte to `value` on the GPU's stream (ordered with the launches, no host wait).
    pub fn fill_async(&mut self, value: u8) -> Result<()> {
        // SAFETY: the memset covers the buffer's own elements and is queued on the same stream as
        // every kernel, so it is ordered with them, and `Buf::drop` synchronises that stream
        // before the memory is freed or goes back to the pool.
        unsafe { self.mem.set_8_async(value, &self.gpu.stream) }.map_err(|e| err("memset", e))
    }
}

impl<T: DeviceCopy> Buf<T> {
    /// Copies the whole buffer to the host, after synchronising the stream.
    pub fn to_vec(&self) -> Result<Vec<T>>
    where
        T: Default + Clone,
    {
        self.gpu
            .sync("waiting for kernels before a copy to the host")?;
        let mut host = vec![T::default(); self.len()];
        self.mem
            .copy_to(&mut host[..])
            .map_err(|e| err("copying to the host", e))?;
        Ok(host)
    }

    /// Overwrites the buffer's first `host.len()` elements from the host (waits for queued work
    /// first, since a kernel may still read the old contents).
    pub fn copy_from_host(&mut self, host: &[T]) -> Result<()> {
        if host.len() > self.len() {
            return Err(Error::Backend {
                backend: "cuda",
                message: format!(
                    "copy of {} elements into a buffer of {}",
                    host.len(),
                    self.len()
                ),
            });
        }
        self.gpu
            .sync("waiting for kernels before overwriting a buffer")?;
        self.write_head(host)
    }

    /// The first `host.len()` (≤ len) elements from the host, with no wait: for a buffer no
    /// queued work can use yet (just allocated).
    pub(super) fn write_head(&mut self, host: &[T]) -> Result<()> {
        let mut head = self.mem.index(..host.len());
        head.copy_from(host)
            .map_err(|e| err("copying to the device", e))
    }
}

impl<T: DeviceCopy> Drop for Buf<T> {
    fn drop(&mut self) {
        // Queued work may still use the buffer: wait before it is freed, or reused by the pool's
        // next allocation. A failed sync was already reported by the launch that caused it.
        let _ = self.gpu.stream.synchronize();
        if let Owner::Driver { bytes, .. } = self.owner {
            self.gpu.live.fetch_sub(bytes, Ordering::SeqCst);
        }
        // The owner drops next: `cuMemFree`, or the block back onto its class's free list.
    }
}
