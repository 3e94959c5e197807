use ndarray::Array4;

use super::*;
use crate::hyp_attn::forward::forward;
use crate::hyp_attn::{Form, HypAttnArgs, Mask};
use crate::poincare::maps::dist_tangent;
use crate::{splitmix64, Dtype};

fn data(shape: (usize, usize, usize, usize), seed: u64, scale: f64) -> Array4<f64> {
    let mut st = seed;
    Array4::from_shape_fn(shape, |_| {
        st = splitmix64(st);
        f64::from((((st >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale) as f32)
    })
}

fn max_abs(a: &Array4<f64>, b: &Array4<f64>) -> f64 {
    (a - b).iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Every admissible block (or every key) selected = dense causal attention (hyp_attn's path).
#[test]
fn full_selection_is_dense_causal_attention() {
    let (q, k, v) = (
        data((2, 2, 37, 6), 1, 2.0),
        data((2, 2, 37, 6), 2, 2.0),
        data((2, 2, 37, 5), 3, 1.0),
    );
    let args = HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.2, Mask::Causal)
        .unwrap()
        .with_form(Form::Exact);
    let dense = forward::<f64>(&args, Dtype::F64);
    let lists = select_centroid(q.view(), k.view(), 0.693, 8, 5).unwrap();
    assert_eq!(lists.sparsity(), 0.0);
    let got = attend_blocks(q.view(), k.view(), v.view(), 0.693, 1.2, &lists).unwrap();
    assert!(max_abs(&got.o, &dense.o) < 1e-13);
    let all = Array4::from_shape_fn((2, 2, 37, 37), |(_, _, _, j)| j as i32);
    let got = attend_indices(q.view(), k.view(), v.view(), 0.693, 1.2, all.view()).unwrap();
    assert!(max_abs(&got.o, &dense.o) < 1e-13);
    let lsh = Lsh::new(7, 2, 4, 6).unwrap();
    let idx = select_lsh(q.view(), k.view(), 0.693, &lsh, 64, 37).unwrap();
    let got = attend_indices(q.view(), k.view(), v.view(), 0.693, 1.2, idx.view()).unwrap();
    assert!(max_abs(&got.o, &dense.o) < 1e-13);
}

/// Centroid lists against a brute force written here: the diagonal, then earlier blocks by
/// −d(centroid) descending; and attention over them against an explicit masked softmax.
#[test]
fn centroid_lists_and_their_attention() {
    let (c, beta, bm, kb) = (1.0, 0.8, 8, 3);
    let (q, k, v) = (
        data((1, 2, 61, 4), 4, 3.0),
        data((1, 2, 61, 4), 5, 3.0),
        data((1, 2, 61, 4), 6, 1.0),
    );
    let lists = select_centroid(q.view(), k.view(), c, bm, kb).unwrap();
    let mean = |a: &Array4<f64>, h: usize, blk: usize| -> Vec<f64> {
        let rows: Vec<usize> = (blk * bm..((blk + 1) * bm).min(61)).collect();
        (0..4)
            .map(|e| rows.iter().map(|&i| a[[0, h, i, e]]).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let nqb = 61usize.div_ceil(bm);
    for h in 0..2 {
        for qb in 0..nqb {
            let got = lists.blocks_of(0, h, qb);
            assert_eq!(got[0] as usize, qb);
            assert_eq!(got.len(), kb.min(qb + 1));
            let score = |b: i32| -dist_tangent(1.0, &mean(&q, h, qb), &mean(&k, h, b as usize));
            for w in got[1..].windows(2) {
                assert!(score(w[0]) >= score(w[1]));
            }
            if let Some(&last) = got[1..].last() {
                for other in 0..qb as i32 {
                    if !got.contains(&other) {
                        assert!(
                            score(other) <= score(last),
                            "block {other} beats a chosen one"
                        );
                    }
                }
            }
        }
    }
    let admissible = (nqb * (nqb + 1) / 2) as f64;
    let computed: usize = (0..nqb).map(|qb| kb.min(qb + 1)).sum();
    assert!((lists.sparsity() - (1.0 - computed as f64 / admissible)).abs() < 1e-15);
    let got = attend_blocks(q.view(), k.view(), v.view(), c, beta, &lists).unwrap();
    for h in 0..2 {
        for i in 0..61 {
            let keys: Vec<usize> = lists
                .blocks_of(0, h, i / bm)
                .iter()
                .flat_map(|&b| b as usize * bm..(b as usize * bm + bm).min(61))
                .filter(|&j| j <= i)
                .collect();
            let sc: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    -beta
                        * dist_tangent(
                            1.0,
                            &q.slice(ndarray::s![0, h, i, ..]).to_vec(),
                            &k.slice(ndarray::s![0, h, j, ..]).to_vec(),
                        )
                })
                .collect();
            let l: f64 = sc.iter().map(|s| s.exp()).sum();
            for e in 0..4 {
                let want: f64 = keys
                    .iter()
                    .zip(&sc)
                    .map(|(&j, s)| s.exp() / l * v[[0, h, j, e]])
                    .sum();
                assert!((got.o[[0, h, i, e]] - want).abs() < 1e-12, "({h},{i},{e})");
            }
            assert!((got.lse[[0, h, i]] - l.ln()).abs() < 1e-12);
        }
    }
}

#[test]
fn lsh_is_seeded_windowed_and_capped() {
    let (q, k) = (data((1, 1, 50, 8), 8, 2.0), data((1, 1, 50, 8), 9, 2.0));
    let a = Lsh::new(42, 3, 5, 8).unwrap();
    assert_eq!(a, Lsh::new(42, 3, 5, 8).unwrap());
    assert_ne!(a, Lsh::new(43, 3, 5, 8).unwrap());
    let idx = select_lsh(q.view(), k.view(), 0.5, &a, 6, 4).unwrap();
    assert_eq!(idx, select_lsh(q.view(), k.view(), 0.5, &a, 6, 4).unwrap());
    let code = |t: usize, x: &Array4<f64>, i: usize| {
        a.code(t, &x.slice(ndarray::s![0, 0, i, ..]).to_vec())
    };
    for i in 0..50 {
        let got: Vec<i32> = idx
            .slice(ndarray::s![0, 0, i, ..])
            .iter()
            .copied()
            .filter(|&j| j >= 0)
            .collect();
        let cands: Vec<usize> = (0..=i)
            .filter(|&j| j + 4 > i || (0..3).any(|t| code(t, &k, j) == code(t, &q, i)))
            .collect();
        assert_eq!(got.len(), cands.len().min(6));
        assert!(got.iter().all(|&j| cands.contains(&(j as usize))));
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }
    let exact = exact_topk(q.view(), k.view(), 0.5, 6).unwrap();
    assert_eq!(recall(&exact, &exact), 1.0);
    let r = recall(&idx, &exact);
    assert!((0.0..=1.0).contains(&r));
    assert!(Lsh::new(1, 1, 32, 8).is_err());
    assert!(select_lsh(
        q.view(),
        k.view(),
        0.5,
        &Lsh::new(1, 1, 4, 7).unwrap(),
        6,
        4
    )
    .is_err());
}

#[test]
fn bad_arguments_are_named() {
    let q = data((1, 1, 8, 4), 1, 1.0);
    let bad = data((1, 1, 7, 4), 1, 1.0);
    assert!(select_centroid(q.view(), bad.view(), 1.0, 4, 2)
        .unwrap_err()
        .to_string()
        .contains("`k`"));
    assert!(select_centroid(q.view(), q.view(), -1.0, 4, 2)
        .unwrap_err()
        .to_string()
        .contains("`c`"));
    assert!(select_centroid(q.view(), q.view(), 1.0, 0, 2)
        .unwrap_err()
        .to_string()
        .contains("`block`"));
    let idx = Array4::from_elem((1, 1, 8, 2), 8);
    assert!(
        attend_indices(q.view(), q.view(), q.view(), 1.0, 1.0, idx.view())
            .unwrap_err()
            .to_string()
            .contains("`idx`")
    );
    let lists = select_centroid(q.view(), q.view(), 1.0, 4, 2).unwrap();
    assert!(attend_blocks(bad.view(), bad.view(), bad.view(), 1.0, 1.0, &lists).is_err());
}
