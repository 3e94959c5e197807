//! What the model's test files share: fixture paths, loaders, the relative error they all report,
//! and the one-ulp weight noise that measures a profile's noise floor.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use muse_model::{Config, Model, Weights};
use ndarray::Array2;
use ndarray_npy::read_npy;

/// `$MUSE_FIXTURES/model/<sub>` (the GPU machine runs a bundled binary elsewhere), else the
/// repository's `fixtures/model/<sub>`.
pub fn fixtures(sub: &str) -> PathBuf {
    std::env::var_os("MUSE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"))
        .join("model")
        .join(sub)
}

/// The int64 ids of a fixture folder as indices.
pub fn ids(dir: &Path) -> Array2<usize> {
    let ids: Array2<i64> = read_npy(dir.join("ids.npy")).expect("ids.npy");
    ids.mapv(|t| t as usize)
}

/// The numpy oracle's model (fixtures/model/oracle).
pub fn oracle_model() -> Model {
    let d = fixtures("oracle");
    let cfg = Config::resolve(d.join("config.json").to_str().expect("utf-8")).expect("config");
    Model::new(Weights::load(&cfg, &d.join("weights.safetensors")).expect("weights"))
}

/// The original's own parity model (fixtures/model/parity, config `tiny`).
pub fn parity_model() -> Model {
    let cfg = Config::named("tiny").expect("tiny");
    Model::new(
        Weights::load(&cfg, &fixtures("parity").join("weights.safetensors"))
            .expect("the fixture loads"),
    )
}

/// max|got − want| / max|want| over two equally long sequences.
pub fn rel<A, B>(got: impl IntoIterator<Item = A>, want: impl IntoIterator<Item = B>) -> f64
where
    A: Into<f64>,
    B: Into<f64>,
{
    let (mut err, mut scale, mut n) = (0f64, 0f64, 0usize);
    let mut want = want.into_iter();
    for g in got {
        let w: f64 = want.next().expect("as many wanted values as got").into();
        err = err.max((g.into() - w).abs());
        scale = scale.max(w.abs());
        n += 1;
    }
    assert!(
        want.next().is_none() && n > 0,
        "lengths differ or are empty"
    );
    err / scale
}

/// The weights with every other element (pseudo-randomly) one f32 ulp larger.
pub fn one_ulp_noise(w: &Weights) -> Weights {
    let mut noisy = w.clone();
    let mut state = 12345u64;
    for (_, data) in noisy.tensors.values_mut() {
        for v in data.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (state >> 33) & 1 == 1 {
                *v = f32::from_bits(v.to_bits() + 1);
            }
        }
    }
    noisy
}

/// PyTorch autograd's gradient of the oracle (`fixtures/model/grad`, `torch_model.py
/// --grad-fixture`): ids and targets (B, N), the loss from the header, and every tensor (F64, by
/// the original's name).
pub struct TorchGrad {
    /// Token ids.
    pub ids: Array2<usize>,
    /// Next-token targets.
    pub targets: Array2<usize>,
    /// The mean cross-entropy PyTorch computed.
    pub loss: f64,
    /// ∂loss/∂tensor, flat, by name.
    pub tensors: std::collections::BTreeMap<String, Vec<f64>>,
}

/// Reads [`TorchGrad`]; every tensor must be F64.
pub fn torch_grad() -> TorchGrad {
    use safetensors::{Dtype, SafeTensors};
    let dir = fixtures("grad");
    let read = |f: &str| -> Array2<usize> {
        let a: Array2<i64> = read_npy(dir.join(f)).expect(f);
        a.mapv(|t| t as usize)
    };
    let bytes = std::fs::read(dir.join("grads.safetensors")).expect("grads");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("header");
    let loss: f64 = header.metadata().as_ref().expect("metadata")["loss"]
        .parse()
        .expect("loss");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), Dtype::F64, "{n}");
            let v = t
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            (n, v)
        })
        .collect();
    TorchGrad {
        ids: read("ids.npy"),
        targets: read("targets.npy"),
        loss,
        tensors,
    }
}
