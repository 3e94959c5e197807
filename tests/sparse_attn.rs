//! Block-skip sparse attention on the GPU (`muse_cuda::sparse_attn`) against the reference
//! (`muse_reference::sparse_attn`, design hyperbolic.md §6, §16): the device's centroid lists are
//! the reference's on the same bf16 inputs (up to near-ties of the block scores), the attention
//! over the device's lists equals the f64 reference over the same lists within the bf16 rule
//! (MSE < 1e-6, max|Δ| ≤ 1e-2·max|v|), and with every block listed it equals the dense kernel.
//! The LSH selection's codes are the reference's `Lsh::code` (but for dots within f32 rounding of
//! 0), its lists `select_lsh`'s (up to f32 near-ties of the scores), the index attention equals
//! `attend_indices` in f64, and bad arguments are refused by name.
//! Run on the GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::hyp_attn::{HypAttnArgs, Mask};
    use muse::reference::poincare::maps::dist_tangent;
    use muse::reference::sparse_attn::{attend_blocks, attend_indices, BlockLists, Lsh};
    use muse::reference::{bf16_from_f64, splitmix64};
    use muse::verify::ErrorStats;
    use muse_cuda::hyp_attn_tc::{forward, ForwardWs, Problem};
    use muse_cuda::sparse_attn::{
        forward_indexed, forward_sparse, select_centroid, select_lsh, IndexedWs,
    };
    use ndarray::Array4;

    /// (MSE, max |Δ|) of the device's o against the reference's (`ErrorStats`); every value of
    /// both must be finite.
    fn o_error(got: &[f32], want: &Array4<f64>) -> (f64, f64) {
        let got: Vec<f64> = got.iter().map(|&x| f64::from(x)).collect();
        let want: Vec<f64> = want.iter().copied().collect();
        assert_eq!(got.len(), want.len(), "o length");
        assert!(
            got.iter().chain(&want).all(|x| x.is_finite()),
            "non-finite o"
        );
        let e = ErrorStats::real(&got, &want);
        (e.mse, e.max_abs)
    }

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
            let (mse, worst) = o_error(&ws.o.to_vec().expect("o"), &want.o);
            let vmax = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            assert!(
                mse <= 1e-6 && worst <= 1e-2 * vmax,
                "N {n}: mse {mse:.2e}, max {worst:.2e}"
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

    fn lsh_problem(
        n: usize,
        dim: usize,
        seed: u64,
    ) -> (Array4<f64>, Array4<f64>, Array4<f64>, Problem) {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        let (q, k, v) = (
            data((1, 2, n, dim), seed, 1.5),
            data((1, 2, n, dim), seed + 1, 1.5),
            data((1, 2, n, dim), seed + 2, 1.0),
        );
        let args =
            HypAttnArgs::new(q.view(), k.view(), v.view(), 0.693, 1.0, Mask::Causal).expect("args");
        let p = Problem::upload(gpu, &args).expect("upload");
        (q, k, v, p)
    }

    #[test]
    fn cuda_lsh_selection_matches_the_reference() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        let c = 0.693;
        let s = f64::sqrt(c);
        // (N, D, T, h, k_cap, window): N not a multiple of 64; k_cap above the candidates; D 128
        for (n, dim, tables, bits, k_cap, window) in [
            (300, 64, 4, 5, 24, 16),
            (150, 64, 2, 8, 200, 8),
            (200, 128, 3, 4, 40, 0),
        ] {
            let (q, k, _, p) = lsh_problem(n, dim, 11);
            let lsh = Lsh::new(5, tables, bits, dim).expect("lsh");
            let sel = select_lsh(gpu, &p, &lsh, k_cap, window).expect("select");
            let (codes, idx) = (
                sel.codes.to_vec().expect("codes"),
                sel.idx.to_vec().expect("idx"),
            );
            // (a) codes: q rows then k rows, [2, 2·N, T]
            let (mut ties, mut total) = (0usize, 0usize);
            for (side, x) in [&q, &k].into_iter().enumerate() {
                for h in 0..2 {
                    for i in 0..n {
                        let row: Vec<f64> = x.slice(ndarray::s![0, h, i, ..]).to_vec();
                        for t in 0..tables {
                            let got = codes[(side * 2 * n + h * n + i) * tables + t];
                            let want = lsh.code(t, &row);
                            for b in 0..bits {
                                let plane = lsh.planes.slice(ndarray::s![t, b, ..]);
                                let dot: f64 = plane.iter().zip(&row).map(|(a, x)| a * x).sum();
                                let mag: f64 =
                                    plane.iter().zip(&row).map(|(a, x)| (a * x).abs()).sum();
                                total += 1;
                                if dot.abs() <= 1e-5 * mag {
                                    ties += 1;
                                    continue;
                                }
                                assert_eq!(
                                    got >> b & 1,
                                    want >> b & 1,
                                    "side {side} head {h} row {i} table {t} bit {b}: dot {dot:e}"
                                );
                            }
                            assert_eq!(got >> bits, 0, "code wider than h bits");
                        }
                    }
                }
            }
            assert!(ties * 1000 <= total, "{ties} near-zero dots of {total}");
            // (b) lists against select_lsh in f64
            let want = muse::reference::sparse_attn::select_lsh(
                q.view(),
                k.view(),
                c,
                &lsh,
                k_cap,
                window,
            )
            .expect("reference");
            let mut differ = 0usize;
            for h in 0..2 {
                for i in 0..n {
                    let got: Vec<i32> = idx[(h * n + i) * k_cap..(h * n + i + 1) * k_cap].to_vec();
                    let reference: Vec<i32> = want.slice(ndarray::s![0, h, i, ..]).to_vec();
                    let len = |l: &[i32]| l.iter().take_while(|&&j| j >= 0).count();
                    let (gl, rl) = (len(&got), len(&reference));
                    assert_eq!(
                        gl, rl,
                        "head {h} query {i}: list sizes {got:?} vs {reference:?}"
                    );
                    assert!(
                        got[gl..].iter().all(|&j| j == -1),
                        "padding of {i}: {got:?}"
                    );
                    assert!(
                        got[..gl].windows(2).all(|w| w[0] < w[1])
                            && got[..gl].iter().all(|&j| j <= i as i32),
                        "head {h} query {i}: not ascending and causal {got:?}"
                    );
                    if got == reference {
                        continue;
                    }
                    differ += 1;
                    let qi = q.slice(ndarray::s![0, h, i, ..]).to_vec();
                    let score = |j: i32| {
                        -dist_tangent(s, &qi, &k.slice(ndarray::s![0, h, j as usize, ..]).to_vec())
                    };
                    let kth = reference[..rl]
                        .iter()
                        .map(|&j| score(j))
                        .fold(f64::INFINITY, f64::min);
                    for &j in &got[..gl] {
                        let sj = score(j);
                        assert!(
                            sj >= kth - 1e-5 * (1.0 + kth.abs()),
                            "head {h} query {i}: key {j} scores {sj} below the k-th best {kth}"
                        );
                    }
                }
            }
            assert!(differ * 50 <= 2 * n, "{differ} of {} lists differ", 2 * n);
        }
    }

    #[test]
    fn cuda_indexed_attention_matches_attend_indices() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        let (c, beta) = (0.693, 1.0);
        for (n, dim) in [(300, 64), (130, 128)] {
            let (q, k, v, p) = lsh_problem(n, dim, 21);
            let lsh = Lsh::new(9, 4, 6, dim).expect("lsh");
            let sel = select_lsh(gpu, &p, &lsh, 48, 16).expect("select");
            let ws = IndexedWs::new(gpu, &p).expect("ws");
            // the selection's lists, then hand-made ones: width 45, −1 inside, keys j > i, each
            // key at most once per row (attend_indices takes sets; the kernel counts repeats)
            let mut st = 77u64;
            let hand: Vec<i32> = (0..2 * n * 45)
                .map(|x| {
                    st = splitmix64(st);
                    if x % 5 == 2 {
                        -1
                    } else {
                        ((st >> 20) % n as u64) as i32 // about half past the query: skipped
                    }
                })
                .collect();
            let hand: Vec<i32> = hand
                .chunks(45)
                .flat_map(|row| {
                    let mut seen = std::collections::BTreeSet::new();
                    row.iter()
                        .map(|&j| if j >= 0 && !seen.insert(j) { -1 } else { j })
                        .collect::<Vec<_>>()
                })
                .collect();
            for (idx, width) in [(sel.idx.to_vec().expect("idx"), 48usize), (hand, 45)] {
                let dev = gpu.upload(&idx).expect("upload");
                forward_indexed(gpu, &p, &ws, &dev, width).expect("forward");
                let view = Array4::from_shape_vec((1, 2, n, width), idx).expect("shape");
                let want = attend_indices(q.view(), k.view(), v.view(), c, beta, view.view())
                    .expect("reference");
                let lse = ws.lse.to_vec().expect("lse");
                let (mse, worst) = o_error(&ws.o.to_vec().expect("o"), &want.o);
                let vmax = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                assert!(
                    mse <= 1e-6 && worst <= 1e-4 * vmax,
                    "N {n} D {dim} width {width}: mse {mse:.2e}, max {worst:.2e}"
                );
                for (x, (g, w)) in lse.iter().zip(want.lse.iter()).enumerate() {
                    let ok = if w.is_finite() {
                        (f64::from(*g) - w).abs() <= 1e-5 * (1.0 + w.abs())
                    } else {
                        *g == f32::NEG_INFINITY
                    };
                    assert!(ok, "N {n} width {width} row {x}: lse {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn cuda_lsh_refusals_name_the_argument() {
        use muse::reference::Error;
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        let (_, _, _, p) = lsh_problem(100, 64, 31);
        let arg = |e: Error| match e {
            Error::Domain { arg, .. } | Error::Shape { arg, .. } => arg,
            other => panic!("unexpected error {other:?}"),
        };
        let lsh = Lsh::new(1, 4, 8, 64).expect("lsh");
        for k_cap in [0, 257] {
            let e = select_lsh(gpu, &p, &lsh, k_cap, 8).err().expect("refused");
            assert_eq!(arg(e), "k_cap");
        }
        for bad in [
            Lsh::new(1, 4, 8, 128).expect("lsh"),  // D 128 for D 64 rows
            Lsh::new(1, 4, 13, 64).expect("lsh"),  // h > 12
            Lsh::new(1, 17, 4, 64).expect("lsh"),  // T > 16
            Lsh::new(1, 12, 12, 64).expect("lsh"), // T·h > 128
        ] {
            let e = select_lsh(gpu, &p, &bad, 16, 8).err().expect("refused");
            assert_eq!(arg(e), "lsh");
        }
        let ws = IndexedWs::new(gpu, &p).expect("ws");
        let short = gpu.upload(&[0i32; 7]).expect("upload");
        let e = forward_indexed(gpu, &p, &ws, &short, 8).expect_err("refused");
        assert_eq!(arg(e), "idx");
    }
}
