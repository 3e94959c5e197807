//! # muse-pool
//!
//! A size-class memory pool for sub-µs allocation on the hot path of CUDA kernels, where a
//! plain `cust` buffer calls `cuMemAlloc` every time (design `hyperbolic.md` §10).
//!
//! The core knows nothing of CUDA: it manages **address ranges** cut from slabs that a
//! [`SlabSource`] hands out. The CUDA source (`cuMemAlloc`) belongs to the CUDA crate;
//! [`HostAddressSpace`] hands out virtual ranges with no memory behind them, for tests, the
//! trace and the timings.
//!
//! * **Size classes** 2ⁿ·{1, 1.25, 1.5, 1.75} from 256 B: 256, 320, 384, 448, 512, 640, …
//!   ([`class_of`]). Every block address is 256-B aligned; blocks of the classes 320–448, 640
//!   and 896 B are therefore spaced by their size rounded up to 256 B ([`SizeClass::stride`]).
//! * **alloc** pops the class's LIFO free list (a *hit*) or carves a new block from the class's
//!   current slab (a *miss*), growing a slab of `max(slab_bytes, class)` (default 2 MiB, tiled
//!   by whole blocks) when that slab is used up. **free** pushes the block back when its
//!   [`PoolBlock`] drops. Requests above the huge threshold (default 64 MiB) get a dedicated
//!   slab, returned to the source on drop. [`Pool::trim`] returns wholly free slabs.
//! * **Internal fragmentation** `1 − Σrequested / Σclass bytes` over live blocks: for requests
//!   of at least 256 B the class spacing bounds it below 20 % (each class is less than 1.25×
//!   the request). [`PoolStats`] also gives idle reserved bytes and the original's metric.
//! * **One pool per stream**: [`Pool`] is `!Sync`; see its docs for why cross-stream reuse
//!   needs an event. [`SharedPool`] keeps the same books behind an `Arc<Mutex<…>>`: its
//!   [`OwnedBlock`]s own a handle on the pool instead of borrowing it, so they are `Send` and can
//!   live in a struct (a model's workspace); it is still one pool per stream.
//!
//! Also here: [`compat`], the original's pure-Python pool rule for rule (208 / 24 / 60 MiB
//! preallocated for 256 / 32 / 64 MiB targets); [`trace`], the LM attention workload trace and
//! its replay; [`time_alloc_free_pairs`], the hit-pair latency (method in [`timing`]).
//!
//! Files: `src/{class,config,source,stats,timing,trace,compat}.rs`, `src/pool/{mod,slabs,shared}.rs`;
//! tests `tests/{class,pool,props,shared,compat,trace}.rs` (one binary, `tests/main.rs`); bench
//! `benches/pool.rs`.
//!
//! # Example
//! ```
//! use muse_pool::{HostAddressSpace, Pool, PoolConfig};
//!
//! let pool = Pool::with_config(HostAddressSpace::new(), PoolConfig::default())?;
//! let q = pool.alloc(3 << 20)?; // 3 MiB: a class of its own, one block per slab
//! let lse = pool.alloc(4097)?; // class 5120 B, from a 2 MiB slab
//! assert_eq!((q.class_bytes(), lse.class_bytes()), (3 << 20, 5120));
//! assert_eq!(q.addr() % 256, 0);
//! let addr = lse.addr();
//! drop(lse);
//! assert_eq!(pool.alloc(5000)?.addr(), addr); // LIFO reuse: a hit
//!
//! let s = pool.stats();
//! assert_eq!((s.hits, s.misses, s.slab_allocs), (1, 2, 2));
//! assert!(pool.internal_fragmentation() < 0.2);
//! drop(q);
//! pool.trim(); // both slabs are wholly free again
//! assert_eq!(pool.with_source(|src| src.reserved_bytes()), 0);
//! # Ok::<(), muse_pool::PoolError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod class;
pub mod compat;
mod config;
mod error;
mod pool;
mod source;
mod stats;
pub mod timing;
pub mod trace;

pub use class::{class_of, SizeClass, ALIGN, MAX_CLASS_BYTES, MIN_CLASS_BYTES, NUM_CLASSES};
pub use config::PoolConfig;
pub use error::{PoolError, Result};
pub use pool::{OwnedBlock, Pool, PoolBlock, SharedPool};
pub use source::{HostAddressSpace, SlabSource};
pub use stats::PoolStats;
pub use timing::{time_alloc_free_pairs, PairTiming};
