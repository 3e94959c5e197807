//! The INT8 distance matrix on the GPU (`muse_cuda::hyp_int8`) against the reference (design
//! hyperbolic.md §8.1, §16): (a) on the kernel's own codes, the f64 law of cosines within the f32
//! distance rule (rel ≤ 1e-5 where s·d > 1e-3, else abs ≤ 1e-5/s); (b) against the unquantised
//! distance, every pair within the §8.1 bound·(1 + 1e-3) + 1e-6 (plus (a)'s f32 allowance),
//! median ≤ 2e-3 and p99 ≤ 1e-2.
//! Run on the GPU machine (`--features cuda`).

#[cfg(feature = "cuda")]
mod gpu {
    use muse::reference::hyp_int8::bound_d;
    use muse::reference::poincare::acosh1p;
    use muse::reference::poincare::maps::{dist_tangent, law_of_cosines_z, TangentRow};
    use muse::reference::splitmix64;
    use ndarray::Array4;

    fn rows(shape: (usize, usize, usize, usize), seed: u64, s: f64, a_max: f64) -> Array4<f64> {
        let mut st = seed;
        let mut u = move || {
            st = splitmix64(st);
            (st >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut x = Array4::zeros(shape);
        for (r, mut row) in x.rows_mut().into_iter().enumerate() {
            let dir: Vec<f64> = (0..row.len()).map(|_| u() - 0.5).collect();
            let n = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
            let a = if r % 17 == 3 { 0.0 } else { a_max * u() };
            for (e, v) in row.iter_mut().enumerate() {
                *v = f64::from((dir[e] / n * a / s) as f32);
            }
        }
        x
    }

    #[test]
    fn cuda_int8_distances_match_their_codes_and_the_bound() {
        let gpu = crate::common::gpu().expect("GPU").gpu().expect("GPU");
        for (c, d, n, m) in [
            (0.693, 64, 130, 70),
            (2.0, 200, 40, 90),
            (0.01, 3, 20, 20),
            (1.0, 1, 50, 10),
        ] {
            let s = f64::sqrt(c);
            let (x, y) = (rows((2, 1, n, d), 1, s, 5.0), rows((2, 1, m, d), 2, s, 5.0));
            let (got, qx, qy) =
                muse_cuda::hyp_int8::forward_host(gpu, x.view(), y.view(), c).expect("int8");
            let (mut rule, mut errs, mut over) = (0.0f64, Vec::new(), 0.0f64);
            for h in 0..2 {
                for i in 0..n {
                    let xi: Vec<f64> = x.slice(ndarray::s![h, 0, i, ..]).to_vec();
                    let ti = TangentRow::new(s, &xi);
                    let (ci, si) = (
                        &qx.codes[(h * n + i) * d..(h * n + i + 1) * d],
                        f64::from(qx.sigma[h * n + i]),
                    );
                    for j in 0..m {
                        let yj: Vec<f64> = y.slice(ndarray::s![h, 0, j, ..]).to_vec();
                        let tj = TangentRow::new(s, &yj);
                        let (cj, sj) = (
                            &qy.codes[(h * m + j) * d..(h * m + j + 1) * d],
                            f64::from(qy.sigma[h * m + j]),
                        );
                        let dot: i64 = ci
                            .iter()
                            .zip(cj)
                            .map(|(&a, &b)| i64::from(a) * i64::from(b))
                            .sum();
                        let sh = (ti.a - tj.a).sinh();
                        let want = acosh1p(
                            2.0 * sh * sh + ti.sinh2a * tj.sinh2a * (1.0 - si * sj * dot as f64),
                        ) / s;
                        let g = got[[h, 0, i, j]];
                        rule = rule.max(if s * want > 1e-3 {
                            (g - want).abs() / want / 1e-5
                        } else {
                            (g - want).abs() * s / 1e-5
                        });
                        // (b): against the exact distance, the §8.1 bound with these codes' scales
                        let exact = dist_tangent(s, &xi, &yj);
                        let l1 = |t: &TangentRow<f64>| t.unit.iter().map(|v| v.abs()).sum::<f64>();
                        let bc = l1(&ti) * sj / 2.0 + l1(&tj) * si / 2.0 + d as f64 * si * sj / 4.0;
                        let bound =
                            bound_d(s, law_of_cosines_z(&ti, &tj), ti.sinh2a * tj.sinh2a * bc);
                        // plus the f32 arithmetic's own allowance (test (a)'s rule)
                        let f32_rule = 1e-5 * exact.max(1e-3 / s);
                        over =
                            over.max((g - exact).abs() / (bound * (1.0 + 1e-3) + 1e-6 + f32_rule));
                        errs.push((g - exact).abs());
                    }
                }
            }
            errs.sort_by(f64::total_cmp);
            let (median, p99) = (errs[errs.len() / 2], errs[errs.len() * 99 / 100]);
            eprintln!("c {c} D {d}: rule {rule:.2}, bound {over:.2}, median |Δd| {median:.2e}, p99 {p99:.2e}");
            assert!(
                rule <= 1.0,
                "c {c} D {d}: {rule} of the f32 distance rule on its own codes"
            );
            assert!(over <= 1.0, "c {c} D {d}: {over} of the §8.1 bound");
            if d == 64 {
                assert!(
                    median <= 2e-3 && p99 <= 1e-2,
                    "median {median:.2e}, p99 {p99:.2e}"
                );
            }
        }
    }
}
