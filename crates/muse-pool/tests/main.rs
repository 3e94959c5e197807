//! The one test binary of muse-pool (`autotests = false`).

/// `class_of` at the boundaries and the 20 % waste bound.
mod class;
/// `CompatPool` against the original's numbers (208 / 24 / 60 MiB).
mod compat;
/// Unit behaviour of `Pool`: errors, huge blocks, trim, drop, misbehaving sources.
mod pool;
/// proptest: 10⁵ random ops against an independent model; out of memory.
mod props;
/// `SharedPool`/`OwnedBlock`: LIFO reuse, `Send` across threads, books identical to `Pool`'s.
mod shared;
/// The attention workload trace: fragmentation < 20 %; timings printed, never asserted.
mod trace;
