//! The device memory pool under the model (design hyperbolic.md §10): a pooled `Buf` behaves like a
//! driver one and reuses the last freed block of its class; the forward and the training step
//! give the same bits with and without the pool (including after a workspace was rebuilt from
//! reused, stale blocks); a released workspace gives its slabs back. Run on the GPU machine with
//! `--features cuda`.
#![cfg(feature = "cuda")]

use std::sync::{Mutex, MutexGuard, PoisonError};

use muse_cuda::gemm::GemmMath;
use muse_cuda::model::train::CudaTrainer;
use muse_cuda::train::AdamStep;
use muse_model::{init, Config, Model, Profile};
use ndarray::Array2;

/// The pool and the allocation counters are process-wide: the tests of this binary take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gpu() -> &'static muse_cuda::Gpu {
    muse_cuda::Cuda::new()
        .and_then(|c| c.gpu())
        .expect("a GPU (these tests run on the GPU machine)")
}

fn live_blocks() -> usize {
    gpu().pool_stats().map_or(0, |s| s.live_blocks)
}

fn ids(b: usize, n: usize, vocab: usize) -> Array2<usize> {
    Array2::from_shape_fn((b, n), |(i, j)| (i * 31 + j * 7 + 1) % vocab)
}

#[test]
fn pooled_buffers_work_like_driver_buffers_and_reuse_the_last_freed_block() {
    let _turn = serial();
    let gpu = gpu();
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let mut a = {
        let _scope = gpu.pooled();
        gpu.upload(&host).expect("pooled upload")
    };
    assert!(a.is_pooled());
    assert_eq!((a.len(), a.ptr().as_raw() % 256), (1000, 0));
    assert_eq!(a.to_vec().expect("download"), host);
    a.copy_from_host(&[7.0; 10]).expect("overwrite");
    let got = a.to_vec().expect("download");
    assert_eq!((&got[..10], got[10]), (&[7.0; 10][..], 5.0));
    let v = a.slice(10, 20).expect("in range");
    assert_eq!(v.ptr().as_raw(), a.ptr().as_raw() + 40);
    assert!(a.slice(990, 11).is_err());
    a.fill_async(0).expect("memset");
    assert!(a.to_vec().expect("download").iter().all(|&x| x == 0.0));
    a.poison().expect("poison");
    assert!(a.to_vec().expect("download").iter().all(|x| x.is_nan()));

    // 4000 B and 3600 B share the 4096 B class: the freed block comes straight back (a hit),
    // with no new slab, so the driver's live bytes do not move.
    let (addr, stats, live) = (
        a.ptr().as_raw(),
        gpu.pool_stats().expect("used"),
        gpu.live_bytes(),
    );
    drop(a);
    let b = {
        let _scope = gpu.pooled();
        gpu.alloc::<f32>(900).expect("pooled alloc")
    };
    let after = gpu.pool_stats().expect("used");
    assert_eq!(b.ptr().as_raw(), addr, "LIFO reuse");
    assert_eq!(
        (after.hits, after.slab_allocs),
        (stats.hits + 1, stats.slab_allocs)
    );
    assert_eq!(gpu.live_bytes(), live);

    // Outside a scope: the driver path, counted in the live bytes.
    let c = gpu.alloc::<f32>(256).expect("driver alloc");
    assert!(!c.is_pooled());
    assert_eq!(gpu.live_bytes(), live + 1024);
}

#[test]
fn the_forward_gives_the_same_bits_with_and_without_the_pool() {
    let _turn = serial();
    let cfg = Config::named("tiny").expect("tiny");
    let model = Model::new(init::init(&cfg, 3));
    let x = ids(2, 16, cfg.vocab_size);
    let mut m = model.cuda(Profile::Exact, false).expect("cuda model");
    assert!(m.pooled(), "pooled by default");
    let before = live_blocks();
    let pooled = m.forward(x.view()).expect("pooled forward");
    let with_ws = live_blocks();
    assert!(
        with_ws >= before + 18,
        "the workspace is pool blocks: {before} -> {with_ws}"
    );
    // Another shape rebuilds the workspace from freed (stale) blocks, then the first again.
    let y = ids(1, 40, cfg.vocab_size);
    let pooled_y = m.forward(y.view()).expect("pooled forward, another shape");
    let pooled_again = m
        .forward(x.view())
        .expect("pooled forward, the first shape");
    m.set_pooled(false);
    assert_eq!(
        live_blocks(),
        before,
        "set_pooled(false) dropped the pooled workspace"
    );
    let driver = m.forward(x.view()).expect("driver forward");
    let driver_y = m.forward(y.view()).expect("driver forward, another shape");
    assert_eq!(live_blocks(), before, "nothing pooled on the driver path");
    assert_eq!(pooled, driver);
    assert_eq!(pooled_again, driver);
    assert_eq!(pooled_y, driver_y);
}

#[test]
fn training_steps_give_the_same_bits_with_and_without_the_pool() {
    let _turn = serial();
    let cfg = Config::named("tiny").expect("tiny");
    let w = init::init(&cfg, 5).model::<f32>();
    let adam = AdamStep {
        lr: 1e-3,
        weight_decay: 0.01,
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        c1: 0.0,
        c2: 0.0,
    };
    let mut pooled = CudaTrainer::new(gpu(), cfg.dims(), &w, GemmMath::Fp32).expect("trainer");
    let mut driver = CudaTrainer::new(gpu(), cfg.dims(), &w, GemmMath::Fp32).expect("trainer");
    driver.set_pooled(false);
    assert!(pooled.pooled() && !driver.pooled());
    // Two shapes in turn: each change rebuilds both workspaces, the pooled ones from reused blocks.
    for (step, (b, n)) in [(2, 16), (2, 16), (1, 24), (2, 16)].into_iter().enumerate() {
        let x = ids(b, n, cfg.vocab_size);
        let t = x.mapv(|v| (v * 13 + 5) % cfg.vocab_size);
        let lp = pooled
            .step(x.view(), t.view(), adam, 1.0)
            .expect("pooled step");
        let ld = driver
            .step(x.view(), t.view(), adam, 1.0)
            .expect("driver step");
        assert_eq!(lp.to_bits(), ld.to_bits(), "loss of step {step}");
    }
    assert_eq!(
        pooled.grads().expect("grads"),
        driver.grads().expect("grads")
    );
    assert_eq!(
        pooled.params_flat().expect("params"),
        driver.params_flat().expect("params")
    );
}

#[test]
fn a_released_workspace_gives_its_slabs_back() {
    let _turn = serial();
    let gpu = gpu();
    let cfg = Config::named("tiny").expect("tiny");
    let m = Model::new(init::init(&cfg, 1))
        .cuda(Profile::Exact, false)
        .expect("cuda model");
    let before = live_blocks();
    m.enqueue(ids(4, 64, cfg.vocab_size).view())
        .expect("forward");
    gpu.sync("the forward").expect("sync");
    let (live, reserved) = (
        gpu.live_bytes(),
        gpu.pool_stats().expect("used").reserved_bytes,
    );
    m.release_workspace();
    let after = gpu.pool_stats().expect("used");
    assert_eq!(after.live_blocks, before);
    assert!(
        after.reserved_bytes < reserved,
        "{} -> {}",
        reserved,
        after.reserved_bytes
    );
    assert_eq!(
        live - gpu.live_bytes(),
        reserved - after.reserved_bytes,
        "the trimmed slabs left the driver's live bytes"
    );
}
