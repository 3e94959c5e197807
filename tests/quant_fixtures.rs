//! The quantised families against the independent numpy/mpmath oracle (`fixtures/quant/gen.py`):
//! codes, zero points, packed bytes and fp16 bit patterns exactly; the f64 arithmetic on those
//! codes within `tol::QUANT_F64` (design hyperbolic.md §16 test (a)); and the quantisation error
//! against the unquantised oracle within the analytic bounds (test (b)).

use muse::reference::acosh_lut::{AcoshLut, CompatLut};
use muse::reference::hyp_int8::{
    dist_ball_int8, dist_int8, pair_bound, quantize_ball, quantize_dirs,
};
use muse::reference::kv4::{quantize_group, Kv4Cache, Kv4Config, KvLayout};
use muse::reference::poincare::maps::{dist_tangent, law_of_cosines_z, TangentRow};
use muse::reference::quant::pack_nibbles;
use muse::reference::w4a8::{
    error_bound, gemm_exact, quantize_activations, quantize_weights, WeightCodec,
};
use muse::verify::fixtures::{FixtureCase, Manifest};
use muse::verify::tolerance::tol;
use ndarray::{Array, Ix1, Ix2};

use crate::hyp_common::assert_tol;

/// A quantisation group: its (row, column) cells and its metadata index.
type Group = (Vec<(usize, usize)>, Vec<usize>);

fn cases(family: &str) -> anyhow::Result<(Manifest, Vec<FixtureCase>)> {
    let m = Manifest::discover()?;
    let cases: Vec<FixtureCase> = m.family(family).cloned().collect();
    anyhow::ensure!(!cases.is_empty(), "no `{family}` fixtures in the manifest");
    Ok((m, cases))
}

fn flat<T: Copy, D: ndarray::Dimension>(a: &Array<T, D>) -> Vec<T> {
    a.iter().copied().collect()
}

#[test]
fn kv4_codec_matches_the_oracle_code_for_code() -> anyhow::Result<()> {
    let (m, cases) = cases("kv4")?;
    for case in &cases {
        let x = m.array::<Ix2>(case, "x")?;
        let (t, d) = x.dim();
        let per_channel = case.param_str("layout")? == "per_channel";
        let g = if per_channel {
            case.param_f64("G")? as usize
        } else {
            1
        };
        let (codes, packed) = (
            m.array_of::<u8, Ix2>(case, "codes")?,
            m.array_of::<u8, Ix2>(case, "packed")?,
        );
        let (sbits, mbits) = (
            m.array_of::<u16, ndarray::IxDyn>(case, "scale_f16bits")?,
            m.array_of::<u16, ndarray::IxDyn>(case, "min_f16bits")?,
        );
        let (xhat, bound) = (
            m.array::<Ix2>(case, "xhat")?,
            m.array::<Ix2>(case, "bound")?,
        );
        let mut got_x = ndarray::Array2::zeros((t, d));
        let mut got_codes = ndarray::Array2::<u8>::zeros((t, d));
        let mut got_bound = ndarray::Array2::zeros((t, d));
        let groups: Vec<Group> = if per_channel {
            (0..t / g)
                .flat_map(|blk| {
                    (0..d).map(move |ch| {
                        (
                            (blk * g..(blk + 1) * g).map(|r| (r, ch)).collect(),
                            vec![blk, ch],
                        )
                    })
                })
                .collect()
        } else {
            (0..t)
                .map(|r| ((0..d).map(|ch| (r, ch)).collect(), vec![r]))
                .collect()
        };
        for (cells, meta) in groups {
            let vals: Vec<f64> = cells.iter().map(|&ij| x[ij]).collect();
            let q = quantize_group("kv4", "x", &vals)?;
            let meta = ndarray::IxDyn(&meta);
            anyhow::ensure!(
                q.step16.to_bits() == sbits[&meta] && q.min16.to_bits() == mbits[&meta],
                "{}: fp16 metadata of group {meta:?}",
                case.name
            );
            for ((&ij, &c), v) in cells.iter().zip(&q.codes).zip(q.dequantize()) {
                got_codes[ij] = c;
                got_x[ij] = v;
                got_bound[ij] = q.bound();
            }
        }
        anyhow::ensure!(got_codes == codes, "{}: codes differ", case.name);
        let repacked: Vec<u8> = got_codes
            .rows()
            .into_iter()
            .flat_map(|r| pack_nibbles(&r.to_vec()).unwrap_or_default())
            .collect();
        anyhow::ensure!(
            repacked == flat(&packed),
            "{}: packed bytes differ",
            case.name
        );
        assert_tol(
            &format!("{} xhat", case.name),
            &flat(&got_x),
            &flat(&xhat),
            tol::QUANT_F64,
        )?;
        assert_tol(
            &format!("{} bound", case.name),
            &flat(&got_bound),
            &flat(&bound),
            tol::QUANT_F64,
        )?;
        for ((a, b), e) in x.iter().zip(&got_x).zip(&got_bound) {
            anyhow::ensure!(
                (a - b).abs() <= e * (1.0 + 1e-12),
                "{}: |x − x̂| = {} > bound {e}",
                case.name,
                (a - b).abs()
            );
        }
        if !per_channel {
            // the per-token cache stores exactly these codes and reads back the oracle's x̂
            let cfg = Kv4Config {
                batch: 1,
                heads: 1,
                dim: d,
                capacity: t,
                layout: KvLayout::PerToken,
                radial: false,
                ring: false,
            };
            let mut cache = Kv4Cache::new(cfg)?;
            let kv = x.clone().into_shape_with_order((1, 1, t, d))?;
            cache.append(kv.view(), kv.view(), &[0])?;
            anyhow::ensure!(
                cache.keys(0, 0) == xhat && cache.values(0, 0) == xhat,
                "{}: cache read-back",
                case.name
            );
        }
    }
    Ok(())
}

#[test]
fn int8_tangent_distance_matches_the_oracle() -> anyhow::Result<()> {
    let (m, cases) = cases("int8_dir")?;
    for case in &cases {
        let (u, w) = (m.array::<Ix2>(case, "u")?, m.array::<Ix2>(case, "w")?);
        let s = case.param_f64("c")?.sqrt();
        let (qu, qw) = (quantize_dirs(u.view())?, quantize_dirs(w.view())?);
        anyhow::ensure!(
            qu.codes == flat(&m.array_of::<i8, Ix2>(case, "qu")?)
                && qw.codes == flat(&m.array_of::<i8, Ix2>(case, "qw")?),
            "{}: codes",
            case.name
        );
        assert_tol(
            &format!("{} sigma_u", case.name),
            &qu.sigma,
            &flat(&m.array::<Ix1>(case, "sigma_u")?),
            tol::QUANT_F64,
        )?;
        let dot = m.array_of::<i64, Ix2>(case, "dot")?;
        let (n, mm) = dot.dim();
        let pairs: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..mm).map(move |j| (i, j))).collect();
        anyhow::ensure!(
            pairs.iter().all(|&(i, j)| qu.dot(i, &qw, j) == dot[[i, j]]),
            "{}: integer dots",
            case.name
        );
        let got = |f: &dyn Fn(usize, usize) -> f64| {
            pairs.iter().map(|&(i, j)| f(i, j)).collect::<Vec<_>>()
        };
        assert_tol(
            &format!("{} c_hat", case.name),
            &got(&|i, j| qu.c_hat(i, &qw, j)),
            &flat(&m.array::<Ix2>(case, "c_hat")?),
            tol::QUANT_F64,
        )?;
        assert_tol(
            &format!("{} d_int8", case.name),
            &got(&|i, j| dist_int8(s, &qu, i, &qw, j)),
            &flat(&m.array::<Ix2>(case, "d_int8")?),
            tol::HYP_ORACLE_F64,
        )?;
        let d_exact = m.array::<Ix2>(case, "d_exact")?;
        assert_tol(
            &format!("{} d_exact", case.name),
            &got(&|i, j| dist_tangent(s, &u.row(i).to_vec(), &w.row(j).to_vec())),
            &flat(&d_exact),
            tol::HYP_ORACLE_F64,
        )?;
        for &(i, j) in &pairs {
            let z = law_of_cosines_z(
                &TangentRow::new(s, &u.row(i).to_vec()),
                &TangentRow::new(s, &w.row(j).to_vec()),
            );
            let err = (dist_int8(s, &qu, i, &qw, j) - d_exact[[i, j]]).abs();
            anyhow::ensure!(
                err <= pair_bound(s, &qu, i, &qw, j, z) * (1.0 + 1e-9) + 1e-12,
                "{} ({i},{j}): |Δd| {err} over the §8.1 bound",
                case.name
            );
        }
    }
    Ok(())
}

#[test]
fn int8_ball_mode_matches_the_oracle() -> anyhow::Result<()> {
    let (m, cases) = cases("int8_ball")?;
    for case in &cases {
        let (x, y) = (m.array::<Ix2>(case, "x")?, m.array::<Ix2>(case, "y")?);
        let c = case.param_f64("c")?;
        let (qx, qy) = (quantize_ball(x.view())?, quantize_ball(y.view())?);
        anyhow::ensure!(
            qx.codes == flat(&m.array_of::<u8, Ix2>(case, "qx")?)
                && qy.codes == flat(&m.array_of::<u8, Ix2>(case, "qy")?),
            "{}: codes",
            case.name
        );
        anyhow::ensure!(
            qx.zero == flat(&m.array_of::<i64, Ix1>(case, "zp_x")?)
                && qy.rowsum == flat(&m.array_of::<i64, Ix1>(case, "rowsum_y")?),
            "{}: zero points / row sums",
            case.name
        );
        let folded = m.array_of::<i64, Ix2>(case, "dot_folded")?;
        let (n, mm) = folded.dim();
        let pairs: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..mm).map(move |j| (i, j))).collect();
        anyhow::ensure!(
            pairs
                .iter()
                .all(|&(i, j)| qx.folded_dot(i, &qy, j) == folded[[i, j]]),
            "{}: folded dots",
            case.name
        );
        let ip: Vec<f64> = pairs.iter().map(|&(i, j)| qx.ip_hat(i, &qy, j)).collect();
        assert_tol(
            &format!("{} ip_hat", case.name),
            &ip,
            &flat(&m.array::<Ix2>(case, "ip_hat")?),
            tol::QUANT_F64,
        )?;
        let d: Vec<f64> = pairs
            .iter()
            .map(|&(i, j)| dist_ball_int8(c, &qx, i, &qy, j))
            .collect::<Result<_, _>>()?;
        assert_tol(
            &format!("{} d_hat", case.name),
            &d,
            &flat(&m.array::<Ix2>(case, "d_hat")?),
            tol::HYP_ORACLE_F64,
        )?;
    }
    Ok(())
}

#[test]
fn w4a8_matches_the_integer_oracle() -> anyhow::Result<()> {
    let (m, cases) = cases("w4a8")?;
    for case in &cases {
        let (x, w) = (m.array::<Ix2>(case, "x")?, m.array::<Ix2>(case, "w")?);
        let codec = match case.param_str("mode")? {
            "sym" | "symmetric" => WeightCodec::Symmetric,
            _ => WeightCodec::Asymmetric,
        };
        let qx = quantize_activations(x.view())?;
        let qw = quantize_weights(w.view(), case.param_f64("G")? as usize, codec)?;
        anyhow::ensure!(
            qx.codes == flat(&m.array_of::<i8, Ix2>(case, "qx")?),
            "{}: activation codes",
            case.name
        );
        anyhow::ensure!(
            qx.scale.iter().map(|&s| f64::from(s)).collect::<Vec<_>>()
                == flat(&m.array::<Ix1>(case, "sx")?),
            "{}: activation scales",
            case.name
        );
        anyhow::ensure!(
            qw.codes == flat(&m.array_of::<i8, Ix2>(case, "qw")?),
            "{}: weight codes",
            case.name
        );
        anyhow::ensure!(
            qw.packed() == flat(&m.array_of::<u8, Ix2>(case, "w_packed")?),
            "{}: packed weights",
            case.name
        );
        anyhow::ensure!(
            qw.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
                == flat(&m.array_of::<u16, Ix2>(case, "w_scale_f16bits")?),
            "{}: fp16 scales",
            case.name
        );
        anyhow::ensure!(
            qw.zero == flat(&m.array_of::<u8, Ix2>(case, "w_zero")?),
            "{}: zero points",
            case.name
        );
        let y = gemm_exact(&qx, &qw)?;
        assert_tol(
            &format!("{} y", case.name),
            &flat(&y),
            &flat(&m.array::<Ix2>(case, "y_exact")?),
            tol::QUANT_F64,
        )?;
        let (yf, oracle_bound) = (
            m.array::<Ix2>(case, "y_fp")?,
            m.array::<Ix2>(case, "bound")?,
        );
        let ours = error_bound(x.view(), w.view(), &qx, &qw);
        for (((a, b), e), o) in y.iter().zip(&yf).zip(&ours).zip(&oracle_bound) {
            anyhow::ensure!(
                (a - b).abs() <= e * (1.0 + 1e-9) + 1e-12,
                "{}: |ΔY| {} over our bound {e}",
                case.name,
                (a - b).abs()
            );
            anyhow::ensure!(
                (a - b).abs() <= o * (1.0 + 1e-9) + 1e-12,
                "{}: |ΔY| {} over the oracle's bound {o}",
                case.name,
                (a - b).abs()
            );
        }
    }
    Ok(())
}

#[test]
fn acosh_luts_match_the_oracle() -> anyhow::Result<()> {
    let (m, cases) = cases("acosh_lut")?;
    for case in &cases {
        let lut_want = flat(&m.array::<Ix1>(case, "lut")?);
        let exact = flat(&m.array::<Ix1>(case, "exact")?);
        if case.param_str("kind")? == "compat" {
            let lut = CompatLut::new();
            let x = flat(&m.array::<Ix1>(case, "x")?);
            let got: Vec<f64> = x.iter().map(|&v| lut.eval(v)).collect();
            assert_tol(
                &format!("{} lut", case.name),
                &got,
                &lut_want,
                tol::QUANT_F64,
            )?;
            // the table's own range [1, 10] (beyond it the lookup saturates at acosh 10)
            let worst = got
                .iter()
                .zip(&exact)
                .zip(&x)
                .filter(|(_, &v)| v <= 10.0)
                .map(|((g, e), _)| g - e)
                .fold(0.0f64, f64::min);
            // design §16: the compat LUT reproduces −0.2649 worst to 1e-4
            anyhow::ensure!(
                (worst - case.param_f64("worst_err")?).abs() <= 1e-4,
                "{}: worst error {worst}",
                case.name
            );
        } else {
            let lut = AcoshLut::new(case.param_f64("n")? as usize, case.param_f64("U")?)?;
            assert_tol(
                &format!("{} table", case.name),
                lut.table(),
                &flat(&m.array::<Ix1>(case, "table")?),
                tol::QUANT_F64,
            )?;
            let z = flat(&m.array::<Ix1>(case, "z")?);
            let got: Vec<f64> = z.iter().map(|&v| lut.eval(v)).collect();
            assert_tol(
                &format!("{} lut", case.name),
                &got,
                &lut_want,
                tol::QUANT_F64,
            )?;
            for ((g, e), zi) in got.iter().zip(&exact).zip(&z) {
                anyhow::ensure!(
                    (g - e).abs() <= lut.error_bound() + 1e-12,
                    "{} z = {zi}: error {} over {}",
                    case.name,
                    (g - e).abs(),
                    lut.error_bound()
                );
            }
        }
    }
    Ok(())
}
