//! W4A8 GEMM (design hyperbolic.md §8.3), the integer reference of the Q/K/V/O projection kernel:
//! per-token symmetric int8 activations (s_x = absmax/127, stored f32), 4-bit weights per output
//! row and group of G inputs (symmetric −8..=7 with s_w = absmax/7, or asymmetric 0..=15 with a
//! zero point over [min(w, 0), max(w, 0)]; s_w stored fp16), int32 accumulation per group and an
//! f32 epilogue: Y_mn = s_x,m·Σ_g s_w,n,g·(Σ_{k∈g} q_x q_w − z_w,n,g·Σ_{k∈g} q_x).
//!
//! Codes are computed from the stored (rounded) scales. An all-zero row or group stores scale 1
//! and the zero code.
//!
//! ```
//! use muse_reference::w4a8::{gemm_exact, quantize_activations, quantize_weights, WeightCodec};
//! let x = ndarray::arr2(&[[1.0, -0.5, 0.25, 0.0]]);
//! let w = ndarray::arr2(&[[0.7, -0.7, 0.1, 0.2], [0.0, 0.0, 0.0, 0.0]]);
//! let qx = quantize_activations(x.view())?;
//! let qw = quantize_weights(w.view(), 2, WeightCodec::Symmetric)?;
//! let y = gemm_exact(&qx, &qw)?;
//! assert!((y[[0, 0]] - (0.7 + 0.35 + 0.025)).abs() < 0.05);
//! assert_eq!(y[[0, 1]], 0.0);
//! # Ok::<(), muse_reference::Error>(())
//! ```

use half::f16;
use ndarray::{Array2, ArrayView2, Axis};

use crate::quant::{f16_from_f64, pack_nibbles, rint};
use crate::{Error, Result};

const OP: &str = "w4a8";

/// Per-token int8 activations.
#[derive(Debug, Clone)]
pub struct Int8Act {
    /// K.
    pub k: usize,
    /// q [M, K] row-major.
    pub codes: Vec<i8>,
    /// s_x per row, an f32 value.
    pub scale: Vec<f32>,
}

/// How the weights are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightCodec {
    /// −8..=7, s_w = absmax/7, no zero point.
    Symmetric,
    /// 0..=15 with a zero point z_w, s_w = (max − min)/15 over a range that includes 0.
    Asymmetric,
}

/// 4-bit weights [N, K], per row and group of G.
#[derive(Debug, Clone)]
pub struct Int4Weights {
    /// K.
    pub k: usize,
    /// G.
    pub group: usize,
    /// The codec.
    pub codec: WeightCodec,
    /// Codes [N, K] unpacked (−8..=7 or 0..=15).
    pub codes: Vec<i8>,
    /// s_w [N, K/G], fp16.
    pub scale: Vec<f16>,
    /// z_w [N, K/G] (0 for symmetric).
    pub zero: Vec<u8>,
    /// The bound on |w − ŵ| per group [N, K/G]: s_w/2, plus the shortfall of the grid's end when
    /// fp16 rounded the step down (7·(s_raw − s_w)⁺ symmetric, 15·(s_raw − s_w)⁺ asymmetric), which
    /// the clip turns into more than half a step (fp16-subnormal scales make it large).
    pub code_err: Vec<f64>,
}

fn check(arg: &'static str, a: &ArrayView2<'_, f64>) -> Result<()> {
    crate::poincare::check_nonempty(OP, arg, &["rows", "K"], a.shape())?;
    crate::poincare::check_finite(OP, arg, a)
}

/// Quantises activations x [M, K] per token.
pub fn quantize_activations(x: ArrayView2<'_, f64>) -> Result<Int8Act> {
    check("x", &x)?;
    let mut out = Int8Act {
        k: x.ncols(),
        codes: Vec::with_capacity(x.len()),
        scale: Vec::new(),
    };
    for row in x.axis_iter(Axis(0)) {
        let amax = row.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let s = if amax > 0.0 {
            (amax / 127.0) as f32
        } else {
            1.0
        };
        out.codes.extend(
            row.iter()
                .map(|&v| rint(v / f64::from(s)).clamp(-127.0, 127.0) as i8),
        );
        out.scale.push(s);
    }
    Ok(out)
}

/// Quantises weights w [N, K] per row and group of `group` inputs (K a multiple of G, G even).
pub fn quantize_weights(
    w: ArrayView2<'_, f64>,
    group: usize,
    codec: WeightCodec,
) -> Result<Int4Weights> {
    check("w", &w)?;
    let k = w.ncols();
    if group == 0 || group % 2 != 0 || k % group != 0 {
        return Err(Error::Domain {
            op: OP,
            arg: "group",
            rule: format!("(G) must be even and divide K = {k}, got {group}"),
        });
    }
    let mut out = Int4Weights {
        k,
        group,
        codec,
        codes: Vec::with_capacity(w.len()),
        scale: Vec::new(),
        zero: Vec::new(),
        code_err: Vec::new(),
    };
    for row in w.axis_iter(Axis(0)) {
        for g in row.as_slice().unwrap_or(&row.to_vec()).chunks(group) {
            let (mn, mx) = g
                .iter()
                .fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
            let (raw, lo, hi) = match codec {
                WeightCodec::Symmetric => (mx.max(-mn) / 7.0, -8.0, 7.0),
                WeightCodec::Asymmetric => ((mx - mn) / 15.0, 0.0, 15.0),
            };
            let s16 = if raw > 0.0 {
                f16_from_f64(raw)
            } else {
                f16::ONE
            };
            if !s16.is_finite() || f64::from(s16) == 0.0 {
                return Err(Error::Domain {
                    op: OP,
                    arg: "w",
                    rule: format!("has a group whose scale {raw} is outside fp16's range"),
                });
            }
            let s = f64::from(s16);
            let z = match codec {
                WeightCodec::Symmetric => 0.0,
                WeightCodec::Asymmetric => rint(-mn / s).clamp(0.0, 15.0),
            };
            out.codes
                .extend(g.iter().map(|&v| (rint(v / s) + z).clamp(lo, hi) as i8));
            out.scale.push(s16);
            out.zero.push(z as u8);
            // fp16 rounded the step down: the grid's end falls short of the range (7s < absmax,
            // or the top of 0..=15), and the clip there costs more than half a step.
            let shortfall = match codec {
                _ if raw == 0.0 => 0.0,
                WeightCodec::Symmetric => 7.0 * (raw - s).max(0.0),
                WeightCodec::Asymmetric => 15.0 * (raw - s).max(0.0),
            };
            out.code_err.push(s / 2.0 + shortfall);
        }
    }
    Ok(out)
}

impl Int4Weights {
    /// Rows N.
    pub fn rows(&self) -> usize {
        self.codes.len() / self.k
    }

    /// The packed bytes [N, K/2]: byte i = `q[2i] | q[2i+1] << 4` (signed codes as two's complement).
    pub fn packed(&self) -> Vec<u8> {
        let nibbles: Vec<u8> = self.codes.iter().map(|&q| (q as u8) & 0x0f).collect();
        pack_nibbles(&nibbles).unwrap_or_default() // K is even (G is even and divides it)
    }

    /// The dequantised weights s_w·(q − z_w) [N, K].
    pub fn dequantize(&self) -> Array2<f64> {
        let gpr = self.k / self.group;
        Array2::from_shape_fn((self.rows(), self.k), |(n, k)| {
            let g = n * gpr + k / self.group;
            f64::from(self.scale[g])
                * (f64::from(self.codes[n * self.k + k]) - f64::from(self.zero[g]))
        })
    }
}

impl Int8Act {
    /// The dequantised activations s_x·q [M, K].
    pub fn dequantize(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.scale.len(), self.k), |(m, k)| {
            f64::from(self.scale[m]) * f64::from(self.codes[m * self.k + k])
        })
    }
}

/// Y [M, N] from the codes: exact integer sums per group (i32 on the GPU: |Σ| ≤ 127·15·G), one f64
/// product per group, summed over g in order.
pub fn gemm_exact(x: &Int8Act, w: &Int4Weights) -> Result<Array2<f64>> {
    if x.k != w.k {
        return Err(Error::Shape {
            op: OP,
            arg: "w",
            expected: format!("[N, K] with K = {} (x's K)", x.k),
            got: vec![w.rows(), w.k],
        });
    }
    let (m, n, gpr) = (x.scale.len(), w.rows(), w.k / w.group);
    Ok(Array2::from_shape_fn((m, n), |(i, j)| {
        let (xr, wr) = (
            &x.codes[i * x.k..(i + 1) * x.k],
            &w.codes[j * w.k..(j + 1) * w.k],
        );
        let mut y = 0.0;
        for g in 0..gpr {
            let r = g * w.group..(g + 1) * w.group;
            let dot: i64 = xr[r.clone()]
                .iter()
                .zip(&wr[r.clone()])
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum();
            let sum_x: i64 = xr[r].iter().map(|&a| i64::from(a)).sum();
            let acc = dot - i64::from(w.zero[j * gpr + g]) * sum_x;
            y += f64::from(w.scale[j * gpr + g]) * acc as f64;
        }
        f64::from(x.scale[i]) * y
    }))
}

/// |Y − x·wᵀ| ≤ Σ_k(|x_k|·e_w + |w_k|·s_x/2 + s_x·e_w/2) per (m, n), e_w the group's
/// [`Int4Weights::code_err`] (s_w/2 but for the asymmetric fp16 shortfall): design §16's
/// Σ_k(|x_k| s_w/2 + |w_k| s_x/2 + s_x s_w/4), from x̂ŵ − xw = x·δw + w·δx + δx·δw.
pub fn error_bound(
    x: ArrayView2<'_, f64>,
    w: ArrayView2<'_, f64>,
    qx: &Int8Act,
    qw: &Int4Weights,
) -> Array2<f64> {
    let gpr = qw.k / qw.group;
    Array2::from_shape_fn((x.nrows(), w.nrows()), |(i, j)| {
        let sx = f64::from(qx.scale[i]);
        (0..qw.k)
            .map(|k| {
                let ew = qw.code_err[j * gpr + k / qw.group];
                x[[i, k]].abs() * ew + w[[j, k]].abs() * sx / 2.0 + sx * ew / 2.0
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{signed_nibble, unpack_nibbles};
    use crate::splitmix64;
    use proptest::prelude::*;

    fn mat(m: usize, k: usize, seed: u64, scale: f64) -> Array2<f64> {
        let mut st = seed;
        Array2::from_shape_fn((m, k), |_| {
            st = splitmix64(st);
            f64::from((((st >> 11) as f64 / (1u64 << 53) as f64 - 0.3) * scale) as f32)
        })
    }

    fn check(m: usize, k: usize, n: usize, g: usize, codec: WeightCodec, seed: u64) {
        let (mut x, mut w) = (mat(m, k, seed, 2.0), mat(n, k, seed + 1, 0.1));
        w.row_mut(n - 1).slice_mut(ndarray::s![..g]).fill(0.0); // an all-zero group
        x.row_mut(m - 1).fill(0.0); // an all-zero activation row
        let (qx, qw) = (
            quantize_activations(x.view()).unwrap(),
            quantize_weights(w.view(), g, codec).unwrap(),
        );
        let y = gemm_exact(&qx, &qw).unwrap();
        // (a) the integer path equals the f64 product of the dequantised codes
        let yd = qx.dequantize().dot(&qw.dequantize().t());
        for (a, b) in y.iter().zip(&yd) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // (b) against the unquantised product, within the bound
        let bound = error_bound(x.view(), w.view(), &qx, &qw);
        let yf = x.dot(&w.t());
        for ((a, b), e) in y.iter().zip(&yf).zip(&bound) {
            assert!(
                (a - b).abs() <= e * (1.0 + 1e-9) + 1e-12,
                "{a} vs {b}, bound {e}"
            );
        }
        assert!(y.row(m - 1).iter().all(|&v| v == 0.0));
        // packing round-trips, signed codes as two's complement nibbles
        let unpacked = unpack_nibbles(&qw.packed());
        for (&c, &p) in qw.codes.iter().zip(&unpacked) {
            let back = if codec == WeightCodec::Symmetric {
                signed_nibble(p)
            } else {
                p as i8
            };
            assert_eq!(back, c);
        }
    }

    #[test]
    fn shapes_of_the_original_protocol() {
        for codec in [WeightCodec::Symmetric, WeightCodec::Asymmetric] {
            check(4, 256, 8, 128, codec, 1);
            check(1, 64, 5, 32, codec, 2);
            check(3, 96, 6, 32, codec, 3);
        }
    }

    proptest! {
        #[test]
        fn random_shapes(m in 1usize..5, groups in 1usize..4, g in 1usize..9, n in 1usize..6, sym in any::<bool>(), seed in 0u64..500) {
            let codec = if sym { WeightCodec::Symmetric } else { WeightCodec::Asymmetric };
            check(m.max(2), groups * 2 * g, n.max(2), 2 * g, codec, seed);
        }
    }

    /// The quantiser never emits −8 (s = absmax/7), but the kernel decodes every nibble: codes built
    /// by hand put each of −8..=7 (and 0..=15 with zero points 0, 7 and 15) at even and odd
    /// positions, and the integer path must equal the dequantised product.
    #[test]
    fn every_code_at_both_nibble_positions() {
        let (k, g) = (32, 16);
        let x = quantize_activations(mat(3, k, 9, 2.0).view()).unwrap();
        for codec in [WeightCodec::Symmetric, WeightCodec::Asymmetric] {
            let row = |shift: usize| -> Vec<i8> {
                (0..k)
                    .map(|i| {
                        let c = ((i / 2 + shift + 8 * (i % 2)) % 16) as i8;
                        if codec == WeightCodec::Symmetric {
                            c - 8
                        } else {
                            c
                        }
                    })
                    .collect()
            };
            let codes: Vec<i8> = (0..3).flat_map(row).collect();
            for c in 0..16i8 {
                let c = if codec == WeightCodec::Symmetric {
                    c - 8
                } else {
                    c
                };
                let pos: Vec<usize> = codes[..k]
                    .iter()
                    .enumerate()
                    .filter(|(_, &q)| q == c)
                    .map(|(i, _)| i % 2)
                    .collect();
                assert!(
                    pos.contains(&0) && pos.contains(&1),
                    "{codec:?} code {c}: {pos:?}"
                );
            }
            let zero = match codec {
                WeightCodec::Symmetric => vec![0; 6],
                WeightCodec::Asymmetric => vec![0, 7, 15, 3, 8, 1],
            };
            let w = Int4Weights {
                k,
                group: g,
                codec,
                codes,
                scale: [0.5, 0.25, 1.5, 0.125, 2.0, 0.75]
                    .map(f16::from_f32)
                    .to_vec(),
                zero,
                code_err: vec![0.0; 6],
            };
            let y = gemm_exact(&x, &w).unwrap();
            let yd = x.dequantize().dot(&w.dequantize().t());
            for (a, b) in y.iter().zip(&yd) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "{codec:?}: {a} vs {b}"
                );
            }
            let back = unpack_nibbles(&w.packed());
            for (&c, &p) in w.codes.iter().zip(&back) {
                assert_eq!(
                    if codec == WeightCodec::Symmetric {
                        signed_nibble(p)
                    } else {
                        p as i8
                    },
                    c
                );
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let w = Array2::<f64>::zeros((2, 6));
        let err = quantize_weights(w.view(), 4, WeightCodec::Symmetric)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`group`"), "{err}");
        let x = Array2::<f64>::zeros((1, 8));
        let (qx, qw) = (
            quantize_activations(x.view()).unwrap(),
            quantize_weights(w.view(), 2, WeightCodec::Symmetric).unwrap(),
        );
        assert!(gemm_exact(&qx, &qw).is_err());
        assert!(quantize_activations(ndarray::arr2(&[[f64::INFINITY]]).view()).is_err());
    }
}
