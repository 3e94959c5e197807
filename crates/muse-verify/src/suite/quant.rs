//! The quantised families against their independent numpy/mpmath oracle (`fixtures/quant/gen.py`,
//! design hyperbolic.md §4, §8, §16): codes, zero points, packed bytes and fp16 bit patterns must
//! match exactly (mismatch counts, target 0); the f64 arithmetic on those codes within
//! `tol::QUANT_F64` (test (a)); the quantisation error within the analytic bounds (test (b)).
//! CPU only until the CUDA kernels land.

use muse_reference::acosh_lut::{AcoshLut, CompatLut};
use muse_reference::hyp_int8::{
    dist_ball_int8, dist_int8, pair_bound, quantize_ball, quantize_dirs,
};
use muse_reference::kv4::{quantize_group, Kv4Cache, Kv4Config, KvLayout};
use muse_reference::poincare::maps::{dist_tangent, law_of_cosines_z, TangentRow};
use muse_reference::quant::pack_nibbles;
use muse_reference::w4a8::{
    error_bound, gemm_exact, quantize_activations, quantize_weights, WeightCodec,
};
use muse_reference::Backend;
use ndarray::{Array, Array2, Ix1, Ix2, IxDyn};

use crate::fixtures::{FixtureCase, Manifest};
use crate::report::Site;
use crate::stats::Verdict;
use crate::tolerance::{tol, Tolerance};
use crate::{Record, Target};

/// The oracle's families, each a kernel stem of the report.
pub const FAMILIES: [&str; 5] = ["kv4", "int8_dir", "int8_ball", "w4a8", "acosh_lut"];

/// What a case runs: one fixture of one family.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The fixture family (one of [`FAMILIES`]).
    pub family: &'static str,
    /// The fixture case.
    pub name: String,
}

/// One case per fixture, named `quant/<family>/<fixture>`.
pub fn cases(m: &Manifest) -> Vec<(String, Spec)> {
    FAMILIES
        .iter()
        .flat_map(|&family| {
            m.family(family).map(move |f| {
                (
                    format!("quant/{family}/{}", f.name),
                    Spec {
                        family,
                        name: f.name.clone(),
                    },
                )
            })
        })
        .collect()
}

/// No CUDA kernel yet: every case is the CPU reference's.
pub fn cpu_only(_: &Spec) -> bool {
    true
}

fn flat<T: Copy, D: ndarray::Dimension>(a: &Array<T, D>) -> Vec<T> {
    a.iter().copied().collect()
}

/// Records with the identifying fields of one case.
struct Out<'a> {
    site: Site<'a>,
    records: Vec<Record>,
}

impl Out<'_> {
    fn mismatches(&mut self, what: &str, n: usize) {
        self.records.push(self.site.record(
            &format!("{what}_mismatches"),
            n as f64,
            "",
            Some(Target::AtMost(0.0)),
        ));
    }
    fn within(&mut self, what: &str, got: &[f64], want: &[f64], t: Tolerance) {
        let v = Verdict::real(got, want, t);
        let value = if got.len() == want.len() {
            v.worst_ratio
        } else {
            f64::INFINITY
        };
        self.records.push(self.site.record(
            &format!("{what}_err_over_tol"),
            value,
            "",
            Some(Target::AtMost(1.0)),
        ));
    }
    fn ratio(&mut self, what: &str, worst: f64) {
        self.records.push(self.site.record(
            &format!("{what}_err_over_bound"),
            worst,
            "",
            Some(Target::AtMost(1.0)),
        ));
    }
}

fn count_ne<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// Runs one fixture case; the backend only names the rows (the CPU reference computes).
pub fn run<B: Backend>(_be: &B, spec: &Spec, m: &Manifest) -> crate::Result<Vec<Record>> {
    let fx = m
        .family(spec.family)
        .find(|c| c.name == spec.name)
        .ok_or_else(|| crate::Error::Fixture {
            case: spec.name.clone(),
            message: format!("not a `{}` fixture", spec.family),
        })?;
    let case = format!("quant/{}/{}", spec.family, spec.name);
    let shape: Vec<usize> = fx
        .files
        .values()
        .next()
        .map(|f| f.shape.clone())
        .unwrap_or_default();
    let mut out = Out {
        site: Site {
            kernel: spec.family,
            backend: B::NAME,
            case: &case,
            shape: &shape,
            dtype: "f64",
        },
        records: Vec::new(),
    };
    match spec.family {
        "kv4" => kv4(m, fx, &mut out)?,
        "int8_dir" => int8_dir(m, fx, &mut out)?,
        "int8_ball" => int8_ball(m, fx, &mut out)?,
        "w4a8" => w4a8(m, fx, &mut out)?,
        _ => acosh_lut(m, fx, &mut out)?,
    }
    Ok(out.records)
}

/// A quantisation group: its (row, column) cells and its metadata index.
type Group = (Vec<(usize, usize)>, Vec<usize>);

fn kv4(m: &Manifest, fx: &FixtureCase, out: &mut Out<'_>) -> crate::Result<()> {
    let x = m.array::<Ix2>(fx, "x")?;
    let (t, d) = x.dim();
    let per_channel = fx.param_str("layout")? == "per_channel";
    let g = if per_channel {
        fx.param_f64("G")? as usize
    } else {
        1
    };
    let (sbits, mbits) = (
        m.array_of::<u16, IxDyn>(fx, "scale_f16bits")?,
        m.array_of::<u16, IxDyn>(fx, "min_f16bits")?,
    );
    let mut codes = Array2::<u8>::zeros((t, d));
    let (mut xhat, mut bound) = (Array2::zeros((t, d)), Array2::zeros((t, d)));
    let mut meta_bad = 0;
    // per token: one group per row; per channel: one per (block of G rows, channel)
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
        let meta = IxDyn(&meta);
        meta_bad += usize::from(q.step16.to_bits() != sbits[&meta])
            + usize::from(q.min16.to_bits() != mbits[&meta]);
        for ((&ij, &c), v) in cells.iter().zip(&q.codes).zip(q.dequantize()) {
            (codes[ij], xhat[ij], bound[ij]) = (c, v, q.bound());
        }
    }
    out.mismatches(
        "codes",
        count_ne(&flat(&codes), &flat(&m.array_of::<u8, Ix2>(fx, "codes")?)),
    );
    out.mismatches("fp16_meta_bits", meta_bad);
    let packed: Vec<u8> = codes
        .rows()
        .into_iter()
        .flat_map(|r| pack_nibbles(&r.to_vec()).unwrap_or_default())
        .collect();
    out.mismatches(
        "packed",
        count_ne(&packed, &flat(&m.array_of::<u8, Ix2>(fx, "packed")?)),
    );
    let want_xhat = m.array::<Ix2>(fx, "xhat")?;
    out.within("xhat", &flat(&xhat), &flat(&want_xhat), tol::QUANT_F64);
    out.within(
        "bound",
        &flat(&bound),
        &flat(&m.array::<Ix2>(fx, "bound")?),
        tol::QUANT_F64,
    );
    let worst = x
        .iter()
        .zip(&xhat)
        .zip(&bound)
        .map(|((a, b), e)| (a - b).abs() / e.max(1e-300))
        .fold(0.0, f64::max);
    out.ratio("x", worst);
    if !per_channel {
        // the per-token cache stores these codes and reads back the oracle's x̂
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
        let kv =
            x.clone()
                .into_shape_with_order((1, 1, t, d))
                .map_err(|e| crate::Error::Fixture {
                    case: fx.name.clone(),
                    message: e.to_string(),
                })?;
        cache.append(kv.view(), kv.view(), &[0])?;
        out.mismatches(
            "cache_readback",
            count_ne(&flat(&cache.keys(0, 0)), &flat(&want_xhat))
                + count_ne(&flat(&cache.values(0, 0)), &flat(&want_xhat)),
        );
    }
    Ok(())
}

fn pairs(n: usize, m: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|i| (0..m).map(move |j| (i, j))).collect()
}

fn int8_dir(m: &Manifest, fx: &FixtureCase, out: &mut Out<'_>) -> crate::Result<()> {
    let (u, w) = (m.array::<Ix2>(fx, "u")?, m.array::<Ix2>(fx, "w")?);
    let s = fx.param_f64("c")?.sqrt();
    let (qu, qw) = (quantize_dirs(u.view())?, quantize_dirs(w.view())?);
    out.mismatches(
        "codes",
        count_ne(&qu.codes, &flat(&m.array_of::<i8, Ix2>(fx, "qu")?))
            + count_ne(&qw.codes, &flat(&m.array_of::<i8, Ix2>(fx, "qw")?)),
    );
    out.within(
        "sigma",
        &[qu.sigma.clone(), qw.sigma.clone()].concat(),
        &[
            flat(&m.array::<Ix1>(fx, "sigma_u")?),
            flat(&m.array::<Ix1>(fx, "sigma_w")?),
        ]
        .concat(),
        tol::QUANT_F64,
    );
    let dot = m.array_of::<i64, Ix2>(fx, "dot")?;
    let ps = pairs(dot.dim().0, dot.dim().1);
    out.mismatches(
        "integer_dot",
        ps.iter()
            .filter(|&&(i, j)| qu.dot(i, &qw, j) != dot[[i, j]])
            .count(),
    );
    let each =
        |f: &dyn Fn(usize, usize) -> f64| ps.iter().map(|&(i, j)| f(i, j)).collect::<Vec<_>>();
    out.within(
        "c_hat",
        &each(&|i, j| qu.c_hat(i, &qw, j)),
        &flat(&m.array::<Ix2>(fx, "c_hat")?),
        tol::QUANT_F64,
    );
    out.within(
        "d_int8",
        &each(&|i, j| dist_int8(s, &qu, i, &qw, j)),
        &flat(&m.array::<Ix2>(fx, "d_int8")?),
        tol::HYP_ORACLE_F64,
    );
    let d_exact = m.array::<Ix2>(fx, "d_exact")?;
    out.within(
        "d_exact",
        &each(&|i, j| dist_tangent(s, &u.row(i).to_vec(), &w.row(j).to_vec())),
        &flat(&d_exact),
        tol::HYP_ORACLE_F64,
    );
    let worst = ps
        .iter()
        .map(|&(i, j)| {
            let z = law_of_cosines_z(
                &TangentRow::new(s, &u.row(i).to_vec()),
                &TangentRow::new(s, &w.row(j).to_vec()),
            );
            let err = (dist_int8(s, &qu, i, &qw, j) - d_exact[[i, j]]).abs();
            err / (pair_bound(s, &qu, i, &qw, j, z) * (1.0 + 1e-9) + 1e-12)
        })
        .fold(0.0, f64::max);
    out.ratio("d", worst);
    Ok(())
}

fn int8_ball(m: &Manifest, fx: &FixtureCase, out: &mut Out<'_>) -> crate::Result<()> {
    let (x, y) = (m.array::<Ix2>(fx, "x")?, m.array::<Ix2>(fx, "y")?);
    let c = fx.param_f64("c")?;
    let (qx, qy) = (quantize_ball(x.view())?, quantize_ball(y.view())?);
    out.mismatches(
        "codes",
        count_ne(&qx.codes, &flat(&m.array_of::<u8, Ix2>(fx, "qx")?))
            + count_ne(&qy.codes, &flat(&m.array_of::<u8, Ix2>(fx, "qy")?)),
    );
    out.mismatches(
        "zero_points",
        count_ne(
            &[qx.zero.clone(), qy.zero.clone()].concat(),
            &[
                flat(&m.array_of::<i64, Ix1>(fx, "zp_x")?),
                flat(&m.array_of::<i64, Ix1>(fx, "zp_y")?),
            ]
            .concat(),
        ),
    );
    out.mismatches(
        "row_sums",
        count_ne(
            &[qx.rowsum.clone(), qy.rowsum.clone()].concat(),
            &[
                flat(&m.array_of::<i64, Ix1>(fx, "rowsum_x")?),
                flat(&m.array_of::<i64, Ix1>(fx, "rowsum_y")?),
            ]
            .concat(),
        ),
    );
    let folded = m.array_of::<i64, Ix2>(fx, "dot_folded")?;
    let ps = pairs(folded.dim().0, folded.dim().1);
    out.mismatches(
        "folded_dot",
        ps.iter()
            .filter(|&&(i, j)| qx.folded_dot(i, &qy, j) != folded[[i, j]])
            .count(),
    );
    let ip: Vec<f64> = ps.iter().map(|&(i, j)| qx.ip_hat(i, &qy, j)).collect();
    out.within(
        "ip_hat",
        &ip,
        &flat(&m.array::<Ix2>(fx, "ip_hat")?),
        tol::QUANT_F64,
    );
    let d: Vec<f64> = ps
        .iter()
        .map(|&(i, j)| dist_ball_int8(c, &qx, i, &qy, j))
        .collect::<Result<_, _>>()?;
    out.within(
        "d_hat",
        &d,
        &flat(&m.array::<Ix2>(fx, "d_hat")?),
        tol::HYP_ORACLE_F64,
    );
    Ok(())
}

fn w4a8(m: &Manifest, fx: &FixtureCase, out: &mut Out<'_>) -> crate::Result<()> {
    let (x, w) = (m.array::<Ix2>(fx, "x")?, m.array::<Ix2>(fx, "w")?);
    let codec = if fx.param_str("mode")? == "sym" {
        WeightCodec::Symmetric
    } else {
        WeightCodec::Asymmetric
    };
    let qx = quantize_activations(x.view())?;
    let qw = quantize_weights(w.view(), fx.param_f64("G")? as usize, codec)?;
    out.mismatches(
        "activation_codes",
        count_ne(&qx.codes, &flat(&m.array_of::<i8, Ix2>(fx, "qx")?)),
    );
    let sx: Vec<f64> = qx.scale.iter().map(|&s| f64::from(s)).collect();
    out.mismatches(
        "activation_scales",
        count_ne(&sx, &flat(&m.array::<Ix1>(fx, "sx")?)),
    );
    out.mismatches(
        "weight_codes",
        count_ne(&qw.codes, &flat(&m.array_of::<i8, Ix2>(fx, "qw")?)),
    );
    out.mismatches(
        "packed",
        count_ne(&qw.packed(), &flat(&m.array_of::<u8, Ix2>(fx, "w_packed")?)),
    );
    let bits: Vec<u16> = qw.scale.iter().map(|s| s.to_bits()).collect();
    out.mismatches(
        "fp16_scale_bits",
        count_ne(
            &bits,
            &flat(&m.array_of::<u16, Ix2>(fx, "w_scale_f16bits")?),
        ),
    );
    out.mismatches(
        "zero_points",
        count_ne(&qw.zero, &flat(&m.array_of::<u8, Ix2>(fx, "w_zero")?)),
    );
    let y = gemm_exact(&qx, &qw)?;
    out.within(
        "y",
        &flat(&y),
        &flat(&m.array::<Ix2>(fx, "y_exact")?),
        tol::QUANT_F64,
    );
    let (yf, oracle) = (m.array::<Ix2>(fx, "y_fp")?, m.array::<Ix2>(fx, "bound")?);
    let ours = error_bound(x.view(), w.view(), &qx, &qw);
    let worst = |b: &Array2<f64>| {
        y.iter()
            .zip(&yf)
            .zip(b)
            .map(|((a, f), e)| (a - f).abs() / (e * (1.0 + 1e-9) + 1e-12))
            .fold(0.0, f64::max)
    };
    out.ratio("y", worst(&ours));
    out.ratio("y_oracle_bound", worst(&oracle));
    Ok(())
}

fn acosh_lut(m: &Manifest, fx: &FixtureCase, out: &mut Out<'_>) -> crate::Result<()> {
    let (want, exact) = (
        flat(&m.array::<Ix1>(fx, "lut")?),
        flat(&m.array::<Ix1>(fx, "exact")?),
    );
    if fx.param_str("kind")? == "compat" {
        let (lut, x) = (CompatLut::new(), flat(&m.array::<Ix1>(fx, "x")?));
        let got: Vec<f64> = x.iter().map(|&v| lut.eval(v)).collect();
        out.within("lut", &got, &want, tol::QUANT_F64);
        // design §16: −0.2649 worst on the table's own range [1, 10], to 1e-4
        let worst = got
            .iter()
            .zip(&exact)
            .zip(&x)
            .filter(|(_, &v)| v <= 10.0)
            .map(|((g, e), _)| g - e)
            .fold(0.0, f64::min);
        out.records.push(out.site.record(
            "worst_err_minus_original",
            (worst - fx.param_f64("worst_err")?).abs(),
            "",
            Some(Target::AtMost(1e-4)),
        ));
    } else {
        let lut = AcoshLut::new(fx.param_f64("n")? as usize, fx.param_f64("U")?)?;
        out.within(
            "table",
            lut.table(),
            &flat(&m.array::<Ix1>(fx, "table")?),
            tol::QUANT_F64,
        );
        let z = flat(&m.array::<Ix1>(fx, "z")?);
        let got: Vec<f64> = z.iter().map(|&v| lut.eval(v)).collect();
        out.within("lut", &got, &want, tol::QUANT_F64);
        let worst = got
            .iter()
            .zip(&exact)
            .map(|(g, e)| (g - e).abs() / (lut.error_bound() + 1e-12))
            .fold(0.0, f64::max);
        out.ratio("acosh", worst);
    }
    Ok(())
}
