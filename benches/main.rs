//! The one bench binary (`cargo bench`): criterion groups per kernel family, on every backend.
//! KPI reports with targets come from `muse bench`, which uses the same shapes.

use criterion::{criterion_group, criterion_main};

mod bk_core;

criterion_group!(
    benches,
    bk_core::forward,
    bk_core::forward_backward,
    bk_core::sweep
);
criterion_main!(benches);
