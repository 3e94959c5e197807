//! Block-skip sparse attention on the GPU (`muse_cuda::sparse_attn`) against the reference
//! (`muse_reference::sparse_attn`, design hyperbolic.md §6, §16): the device's centroid lists are
//! the reference's on the same bf16 inputs (up to near-ties of the block scores), the attention
//! over the device's lists equals the f64 reference over the same lists within the bf16 rule
//! (MSE < 1e-6, max|Δ| ≤ 1e-2·max|v|), and with every block listed it equals the dense kernel.
//! Run on the GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::hyp_attn::{HypAttnArgs, Mask};
    use muse::reference::poincare::maps::dist_tangent;
    use muse::reference::sparse_attn::{attend_blocks, BlockLists};
    use muse::reference::{bf16_from_f64, splitmix64};
    use muse_cuda::hyp_attn_tc::{forward, ForwardWs, Problem};
    use muse_cuda::sparse_attn::{forward_sparse, select_centroid};
    use ndarray::Array4;

    fn data(shape: (usize, usize, usize, usize), seed: u64, scale: f64) -> Array4<f64> {
        let mut st = seed;
        Array4::from_shape_fn(shape, |_| {
            st = splitmix64(st);
            f64::from(bf16_from_f64(
                ((st >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale,
            ))
        })
    }

    #[test]
    fn cuda_block_skip_attention_matches_the_reference_on_its_lists() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        let (c, beta) = (0.693, 1.0);
        for (n, kb) in [(1000, 3), (512, 8), (300, 2)] {
            let (q, k, v) = (
                data((1, 2, n, 64), 1, 1.5),
                data((1, 2, n, 64), 2, 1.5),
                data((1, 2, n, 64), 3, 1.0),
            );
            let args = HypAttnArgs::new(q.view(), k.view(), v.view(), c, beta, Mask::Causal)
                .expect("args");
            let p = Problem::upload(gpu, &args).expect("upload");
            let ws = ForwardWs::new(gpu, &p).expect("ws");
            let dl = select_centroid(gpu, &p, kb).expect("select");
            forward_sparse(gpu, &p, &ws, &dl).expect("sparse");
            let (lists, counts) = (
                dl.lists.to_vec().expect("lists"),
                dl.counts.to_vec().expect("counts"),
            );
            let nb = n.div_ceil(64);
            // (1) the lists against the centroid scores computed here in f64
            let s = f64::sqrt(c);
            let mean = |a: &Array4<f64>, h: usize, blk: usize| -> Vec<f64> {
                let rows: Vec<usize> = (blk * 64..((blk + 1) * 64).min(n)).collect();
                (0..64)
                    .map(|e| rows.iter().map(|&i| a[[0, h, i, e]]).sum::<f64>() / rows.len() as f64)
                    .collect()
            };
            for h in 0..2 {
                for qb in 0..nb {
                    let row = h * nb + qb;
                    let got: Vec<i32> = lists[row * kb..row * kb + counts[row] as usize].to_vec();
                    assert_eq!(got.len(), kb.min(qb + 1), "count of block {qb}");
                    assert_eq!(got[0] as usize, qb, "the diagonal first");
                    let mut uniq = got.clone();
                    uniq.sort_unstable();
                    uniq.dedup();
                    assert_eq!(
                        uniq.len(),
                        got.len(),
                        "block {qb} lists a block twice: {got:?}"
                    );
                    let score = |j: usize| -dist_tangent(s, &mean(&q, h, qb), &mean(&k, h, j));
                    let mut all: Vec<f64> = (0..qb).map(score).collect();
                    all.sort_by(|a, b| b.total_cmp(a));
                    if let Some(&kth) = all.get(got.len().saturating_sub(2)) {
                        for &j in &got[1..] {
                            let sj = score(j as usize);
                            assert!(
                                sj >= kth - 1e-3 * (1.0 + kth.abs()),
                                "block {j} of {qb}: {sj} below the k-th best {kth}"
                            );
                        }
                    }
                }
            }
            // (2) the attention over the device's lists against the f64 reference over the same
            let reference = BlockLists {
                block: 64,
                k_max: kb,
                dims: (1, 2, n),
                blocks: lists.clone(),
                count: counts.iter().map(|&c| c as usize).collect(),
            };
            let want = attend_blocks(q.view(), k.view(), v.view(), c, beta, &reference)
                .expect("reference");
            let o = ws.o.to_vec().expect("o");
            let (mut sq, mut worst) = (0.0, 0.0f64);
            for (g, w) in o.iter().zip(want.o.iter()) {
                let d = f64::from(*g) - w;
                sq += d * d;
                worst = worst.max(d.abs());
            }
            let vmax = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            assert!(
                sq / o.len() as f64 <= 1e-6 && worst <= 1e-2 * vmax,
                "N {n}: mse {:.2e}, max {worst:.2e}",
                sq / o.len() as f64
            );
            // (3) every block listed in ascending order: the dense kernel's arithmetic, so its
            // output to f32 rounding. (The selection lists them by score, and another order of
            // the online softmax moves the bf16-rounded P by ~1e-4 of max|v|, seen on the H200.)
            let mut all = select_centroid(gpu, &p, nb.min(64)).expect("select all");
            if nb <= 64 {
                let (mut asc, mut cnt) = (vec![-1i32; 2 * nb * nb], vec![0i32; 2 * nb]);
                for row in 0..2 * nb {
                    let qb = row % nb;
                    for j in 0..=qb {
                        asc[row * nb + j] = j as i32;
                    }
                    cnt[row] = qb as i32 + 1;
                }
                all.lists = gpu.upload(&asc).expect("lists");
                all.counts = gpu.upload(&cnt).expect("counts");
                forward_sparse(gpu, &p, &ws, &all).expect("sparse");
                let full = ws.o.to_vec().expect("o");
                let dense_ws = ForwardWs::new(gpu, &p).expect("ws");
                forward(gpu, &p, &dense_ws).expect("dense");
                let dense = dense_ws.o.to_vec().expect("o");
                let diff = full
                    .iter()
                    .zip(&dense)
                    .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    f64::from(diff) <= 1e-5 * vmax.max(1.0),
                    "all blocks vs dense: {diff}"
                );
            }
        }
    }
}
