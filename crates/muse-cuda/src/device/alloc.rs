//! Allocation on the [`Gpu`]: the driver path (one `cuMemAlloc` per buffer, counted in
//! [`Gpu::live_bytes`]) and the pool path (a block of the stream's one [`DevicePool`], whose slabs
//! are driver allocations), chosen per thread by a [`Pooled`] scope, so that code written
//! against [`Gpu::alloc`] is pooled without changing a call site (design `hyperbolic.md` §10).

use std::sync::atomic::Ordering;

use cust::memory::{DeviceBuffer, DeviceCopy};
use muse_pool::{PoolError, PoolStats};
use muse_reference::{Error, Result};

use super::{err, Buf, Gpu};
use crate::pool::{self, DevicePool, DeviceSlabs, Pooled};

impl Gpu {
    /// Allocates `len` elements (at least one). The contents are undefined: kernels overwrite
    /// every element they later read, and the host paths poison outputs first ([`Buf::poison`])
    /// so that an element a kernel failed to write shows as NaN.
    ///
    /// While a [`Gpu::pooled`] scope is alive on the calling thread the buffer is a block of the
    /// GPU's pool; otherwise it is its own driver allocation ([`Gpu::alloc_driver`]).
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let own = gpu.alloc::<f32>(1024)?;
    /// let pooled = {
    ///     let _scope = gpu.pooled();
    ///     gpu.alloc::<f32>(1024)?
    /// };
    /// assert!(!own.is_pooled() && pooled.is_pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn alloc<T: DeviceCopy>(&'static self, len: usize) -> Result<Buf<T>> {
        if pool::routed() {
            self.alloc_pooled(len)
        } else {
            self.alloc_driver(len)
        }
    }

    /// [`Gpu::alloc`] on the driver path whatever the scope: one `cuMemAlloc`, counted in
    /// [`Gpu::live_bytes`] and [`Gpu::peak_bytes`] while the buffer lives (the pool's slabs, and
    /// buffers that live as long as the process, use it).
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let before = gpu.live_bytes();
    /// let _scope = gpu.pooled();
    /// let b = gpu.alloc_driver::<u8>(4096)?;
    /// assert!(!b.is_pooled());
    /// assert_eq!(gpu.live_bytes() - before, 4096);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn alloc_driver<T: DeviceCopy>(&'static self, len: usize) -> Result<Buf<T>> {
        // SAFETY: `DeviceCopy` types are plain data for which any bit pattern read back is a valid
        // value; see `Gpu::alloc` for why nothing reads an element before it is written.
        let buf = unsafe { DeviceBuffer::uninitialized(len.max(1)) }
            .map_err(|e| err(&format!("allocating {len} elements"), e))?;
        Ok(self.track(buf))
    }

    /// Uploads a host slice (into the pool inside a [`Gpu::pooled`] scope, as [`Gpu::alloc`]).
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let b = gpu.upload(&[1i32, 2, 3])?;
    /// assert_eq!(b.to_vec()?, [1, 2, 3]);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn upload<T: DeviceCopy>(&'static self, host: &[T]) -> Result<Buf<T>> {
        if host.is_empty() || !pool::routed() {
            return self.upload_driver(host);
        }
        let mut buf = self.alloc_pooled(host.len())?;
        // No wait needed: the block's previous buffer synchronised the stream when it dropped.
        buf.write_head(host)?;
        Ok(buf)
    }

    /// [`Gpu::upload`] on the driver path whatever the scope.
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// assert!(!gpu.upload_driver(&[0.5f64; 4])?.is_pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn upload_driver<T: DeviceCopy>(&'static self, host: &[T]) -> Result<Buf<T>> {
        if host.is_empty() {
            return self.alloc_driver(0);
        }
        let buf = DeviceBuffer::from_slice(host).map_err(|e| err("copying to the device", e))?;
        Ok(self.track(buf))
    }

    fn track<T: DeviceCopy>(&'static self, buf: DeviceBuffer<T>) -> Buf<T> {
        let bytes = buf.len() * std::mem::size_of::<T>();
        let live = self.live.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(live, Ordering::SeqCst);
        Buf::from_driver(self, buf, bytes)
    }

    /// `len` (at least one) elements from the pool.
    fn alloc_pooled<T: DeviceCopy>(&'static self, len: usize) -> Result<Buf<T>> {
        let len = len.max(1);
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Backend {
                backend: "cuda",
                message: format!("pooled allocation of {len} elements: the size overflows"),
            })?;
        if bytes == 0 {
            return self.alloc_driver(len); // zero-sized elements: no block to carve
        }
        let pool = self.pool();
        let block = match pool.alloc(bytes) {
            Err(PoolError::Source { .. } | PoolError::OutOfMemory { .. }) => {
                // The driver refused a slab: give the wholly free ones back and try once more.
                pool.trim();
                pool.alloc(bytes)
            }
            r => r,
        }
        .map_err(|e| Error::Backend {
            backend: "cuda",
            message: format!("pooled allocation of {len} elements: {e}"),
        })?;
        Ok(Buf::from_block(self, block, len))
    }

    /// The pool of the GPU's one stream (one pool per stream: a freed block goes to the next
    /// allocation with no event), made on first use; its slabs come from [`Gpu::alloc_driver`].
    /// A pooled [`Buf`] synchronises the stream before its block goes back; a block taken from
    /// here directly must not drop while queued work still uses it.
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let released = gpu.pool().trim(); // wholly free slabs back to the driver
    /// println!("{released} B released, {:?}", gpu.pool().stats());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn pool(&'static self) -> &'static DevicePool {
        self.pool
            .get_or_init(|| DevicePool::new(DeviceSlabs::new(self)))
    }

    /// Routes this thread's [`Gpu::alloc`] and [`Gpu::upload`] through [`Gpu::pool`] until the
    /// returned scope drops (scopes nest; other threads are unaffected).
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let scope = gpu.pooled();
    /// let b = gpu.upload(&[1.0f32; 256])?;
    /// drop(scope);
    /// assert!(b.is_pooled() && !gpu.alloc::<f32>(1)?.is_pooled());
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn pooled(&'static self) -> Pooled {
        self.pool();
        Pooled::enter()
    }

    /// The pool's counters (in-use and reserved bytes, their peaks, hits and misses), or `None`
    /// before anything used it.
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let in_use = gpu.pool_stats().map_or(0, |s| s.peak_live_class_bytes);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.get().map(DevicePool::stats)
    }

    /// Bytes currently held by driver allocations ([`Gpu::alloc_driver`]/[`Gpu::upload_driver`],
    /// and so the pool's slabs: its reserve, not its blocks).
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// let before = gpu.live_bytes();
    /// let b = gpu.alloc::<f32>(256)?;
    /// assert_eq!(gpu.live_bytes() - before, 1024);
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Highest [`Gpu::live_bytes`] since the last [`Gpu::reset_peak`]; the pool's peak in-use
    /// bytes are a separate reading ([`Gpu::pool_stats`]).
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Starts a new peak measurement from the current live bytes, the pool's peaks (when there
    /// is a pool) too, so that both readings cover the same window.
    ///
    /// ```no_run
    /// let gpu = muse_cuda::Gpu::get()?;
    /// gpu.reset_peak();
    /// drop(gpu.alloc::<u8>(1 << 20)?);
    /// assert!(gpu.peak_bytes() >= gpu.live_bytes() + (1 << 20));
    /// # Ok::<(), muse_reference::Error>(())
    /// ```
    pub fn reset_peak(&self) {
        self.peak.store(self.live_bytes(), Ordering::SeqCst);
        if let Some(pool) = self.pool.get() {
            pool.reset_peak();
        }
    }
}
