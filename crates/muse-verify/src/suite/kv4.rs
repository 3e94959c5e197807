//! The KV-cache family on every backend (design hyperbolic.md §4, §16): a context appended to a
//! 4-bit (or fp16) cache, queries decoded from it. The decode must equal f64 decode attention on
//! the K, V the backend's own cache holds (CPU: exactly; CUDA f32: MSE < 1e-6, max|Δ| ≤ 1e-4 of
//! the scale, lse to 1e-5), and the held K, V must equal the codec of the same arithmetic applied
//! to the context (CPU: the f64 codec; CUDA: its f32 twin), row for row.

use muse_reference::hyp_attn::Mask;
use muse_reference::kv4::{
    decode_stored, quantize_group, quantize_group_f32, Kv4Config, Kv4DecodeArgs, KvLayout,
    KvStorage,
};
use muse_reference::quant::f16_round;
use muse_reference::{splitmix64, Backend};
use ndarray::Array4;

use super::hyp_checks::{tensor, Rule};
use crate::fixtures::Manifest;
use crate::report::Site;
use crate::{Record, Target};

/// One generated decode problem.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The case id (`kv4/…`).
    pub name: String,
    /// The cache.
    pub cfg: Kv4Config,
    /// What it stores.
    pub storage: KvStorage,
    /// Context length appended.
    pub n: usize,
    /// Queries per row.
    pub nq: usize,
    /// The mask.
    pub mask: Mask,
    /// Seed of the data.
    pub seed: u64,
}

fn cfg(b: usize, h: usize, d: usize, t: usize, radial: bool, ring: bool) -> Kv4Config {
    Kv4Config {
        batch: b,
        heads: h,
        dim: d,
        capacity: t,
        layout: KvLayout::PerToken,
        radial,
        ring,
    }
}

/// The generated cases, named `kv4/<storage>_<shape>_<mask>`.
pub fn cases(_: &Manifest) -> Vec<(String, Spec)> {
    let mut out = Vec::new();
    for storage in [KvStorage::Int4, KvStorage::Fp16] {
        let st = if storage == KvStorage::Int4 {
            "int4"
        } else {
            "fp16"
        };
        for (name, c, n, nq, mask) in [
            (
                "B2H3D64_n30_q4_causal",
                cfg(2, 3, 64, 32, false, false),
                30,
                4,
                Mask::Causal,
            ),
            (
                "B1H2D2_n12_q2_none",
                cfg(1, 2, 2, 16, false, false),
                12,
                2,
                Mask::None,
            ),
            (
                "B1H4D256_n40_q1_causal",
                cfg(1, 4, 256, 40, false, false),
                40,
                1,
                Mask::Causal,
            ),
            (
                "B1H8D64_ring64_n138_window64",
                cfg(1, 8, 64, 64, false, true),
                138,
                1,
                Mask::Window(64),
            ),
            (
                "B1H2D64_n8192_q1_causal",
                cfg(1, 2, 64, 8192, false, false),
                8192,
                1,
                Mask::Causal,
            ),
        ] {
            let id = format!("kv4/{st}_{name}");
            out.push((
                id.clone(),
                Spec {
                    name: id,
                    cfg: c,
                    storage,
                    n,
                    nq,
                    mask,
                    seed: out.len() as u64 + 1,
                },
            ));
        }
    }
    for (name, c, n, nq, mask) in [
        (
            "B2H2D64_G32_n150_q3_causal",
            cfg(2, 2, 64, 160, false, false),
            150,
            3,
            Mask::Causal,
        ),
        (
            "B1H2D6_G32_n64_q1_window8",
            cfg(1, 2, 6, 64, false, false),
            64,
            1,
            Mask::Window(8),
        ),
    ] {
        let id = format!("kv4/int4_perchannel_{name}");
        out.push((
            id.clone(),
            Spec {
                name: id,
                cfg: Kv4Config {
                    layout: KvLayout::PerChannelK { group: 32 },
                    ..c
                },
                storage: KvStorage::Int4,
                n,
                nq,
                mask,
                seed: out.len() as u64 + 1,
            },
        ));
    }
    let radial = cfg(2, 2, 64, 300, true, false);
    let id = "kv4/int4_radial_B2H2D64_n299_q2_causal".to_string();
    out.push((
        id.clone(),
        Spec {
            name: id,
            cfg: radial,
            storage: KvStorage::Int4,
            n: 299,
            nq: 2,
            mask: Mask::Causal,
            seed: 99,
        },
    ));
    out
}

/// Every case runs on every backend.
pub fn cpu_only(_: &Spec) -> bool {
    false
}

/// f32-representable values with per-row offsets (seeded splitmix64; also the GPU tests' data).
///
/// ```
/// let a = muse_verify::suite::kv4::data((1, 1, 2, 4), 7, 1.0);
/// assert!(a.iter().all(|&x| f64::from(x as f32) == x));
/// ```
pub fn data(shape: (usize, usize, usize, usize), seed: u64, scale: f64) -> Array4<f64> {
    let mut st = seed;
    let mut u = move || {
        st = splitmix64(st);
        (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut a = Array4::zeros(shape);
    for mut row in a.rows_mut() {
        let off = 3.0 * u();
        row.iter_mut()
            .for_each(|x| *x = f64::from((off + scale * (u() + u() + u())) as f32));
    }
    a
}

/// Decode against f64 on the backend's own cache; the held K, V against the codec.
pub fn run<B: Backend>(be: &B, spec: &Spec, _: &Manifest) -> crate::Result<Vec<Record>> {
    let c = spec.cfg;
    let (k, v) = (
        data((c.batch, c.heads, spec.n, c.dim), spec.seed, 1.0),
        data((c.batch, c.heads, spec.n, c.dim), spec.seed + 1000, 1.0),
    );
    let q = data((c.batch, c.heads, spec.nq, c.dim), spec.seed + 2000, 0.7);
    let args = Kv4DecodeArgs {
        cfg: c,
        storage: spec.storage,
        k: k.view(),
        v: v.view(),
        q: q.view(),
        c: 0.693,
        beta: 1.3,
        mask: spec.mask,
    };
    let run = be.kv4_decode(&args)?;
    let want = decode_stored(
        q.view(),
        &run.stored,
        args.c,
        args.beta,
        args.mask,
        usize::MAX,
    )?;
    let cuda = B::NAME == "cuda";
    let case = spec.name.clone();
    let shape = [c.batch, c.heads, spec.n, c.dim, spec.nq];
    let site = Site {
        kernel: "kv4_decode",
        backend: B::NAME,
        case: &case,
        shape: &shape,
        dtype: if cuda { "f32" } else { "f64" },
    };
    let flat = |a: &ndarray::ArrayD<f64>| a.iter().copied().collect::<Vec<_>>();
    let (o_rule, lse_rule) = if cuda {
        (Rule::F32, Rule::F32Lse)
    } else {
        (Rule::F64, Rule::F64)
    };
    let mut out = tensor(
        &site,
        "o",
        &flat(&run.out.o.clone().into_dyn()),
        &flat(&want.o.clone().into_dyn()),
        o_rule,
    );
    out.extend(tensor(
        &site,
        "lse",
        &flat(&run.out.lse.clone().into_dyn()),
        &flat(&want.lse.clone().into_dyn()),
        lse_rule,
    ));
    if !c.radial {
        // the held rows against the codec of the backend's arithmetic, applied to the context
        let first = spec.n.saturating_sub(c.capacity);
        let mut bad = 0usize;
        for (row, (keys, vals)) in run.stored.keys.iter().zip(&run.stored.values).enumerate() {
            let (b, h) = (row / c.heads, row % c.heads);
            if let (KvLayout::PerChannelK { group }, KvStorage::Int4) = (c.layout, spec.storage) {
                let want = per_channel_keys(&k, b, h, spec.n, group, cuda)?;
                bad += (0..spec.n)
                    .filter(|&t| keys.row(t).to_vec() != want[t])
                    .count();
            }
            for (i, t) in (first..spec.n).enumerate() {
                for (src, held, key) in [(&k, keys, true), (&v, vals, false)] {
                    if key && c.layout != KvLayout::PerToken {
                        continue; // per-channel K: checked above
                    }
                    let x: Vec<f64> = (0..c.dim).map(|e| src[[b, h, t, e]]).collect();
                    let expect: Vec<f64> = match (spec.storage, cuda) {
                        (KvStorage::Fp16, _) => x.iter().map(|&e| f16_round(e)).collect(),
                        (KvStorage::Int4, false) => quantize_group("kv4", "k", &x)?.dequantize(),
                        (KvStorage::Int4, true) => {
                            quantize_group_f32(&x.iter().map(|&e| e as f32).collect::<Vec<_>>())
                                .dequantize()
                        }
                    };
                    bad += usize::from(held.row(i).to_vec() != expect);
                }
            }
        }
        out.push(site.record(
            "held_rows_not_the_codec",
            bad as f64,
            "",
            Some(Target::AtMost(0.0)),
        ));
    }
    Ok(out)
}

/// The keys a per-channel cache must hold for row (b, h) after n tokens: each complete group of
/// G quantised channel by channel (CPU: the f64 codec; CUDA: its f32 twin) over the fp16-rounded
/// keys, the incomplete group fp16.
#[allow(clippy::needless_range_loop)] // channel ch of each token of the group
fn per_channel_keys(
    k: &Array4<f64>,
    b: usize,
    h: usize,
    n: usize,
    group: usize,
    f32_codec: bool,
) -> crate::Result<Vec<Vec<f64>>> {
    let d = k.dim().3;
    let mut out: Vec<Vec<f64>> = (0..n)
        .map(|t| (0..d).map(|e| f16_round(k[[b, h, t, e]])).collect())
        .collect();
    for g in 0..n / group {
        for ch in 0..d {
            let col: Vec<f64> = (0..group).map(|t| out[g * group + t][ch]).collect();
            let held = if f32_codec {
                quantize_group_f32(&col.iter().map(|&x| x as f32).collect::<Vec<_>>()).dequantize()
            } else {
                quantize_group("kv4", "k", &col)?.dequantize()
            };
            for (t, x) in held.into_iter().enumerate() {
                out[g * group + t][ch] = x;
            }
        }
    }
    Ok(out)
}
