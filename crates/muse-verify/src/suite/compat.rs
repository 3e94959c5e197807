//! The original's compat modes (CPU only) against the fixtures' independent numpy emulations,
//! plus how far each mode is from the exact resolvent (informational: it shows the defects).

use crate::fixtures::{FixtureCase, Manifest};
use crate::tolerance::tol;
use crate::{ErrorStats, Record};
use muse_reference::bk_core::compat::{self, VmapOptions};
use muse_reference::bk_core::hybrid::{hybrid_grad_a, term_scale, DEFAULT_BLEND};
use muse_reference::bk_core::BkCoreArgs;
use muse_reference::{Backend, Cpu, Precision};
use ndarray::{Array2, Array3, Ix2, Ix3};
use num_complex::{Complex32, Complex64};

use super::checks::{within, Row};

/// Whether a fixture carries compat outputs.
pub fn has_compat(fx: &FixtureCase) -> bool {
    fx.has("compat_vmap_g_re")
}

fn widen(x: &Array2<Complex32>) -> Vec<Complex64> {
    x.iter()
        .map(|v| Complex64::new(v.re.into(), v.im.into()))
        .collect()
}

/// Runs every compat check the fixture supports.
pub fn run(m: &Manifest, fx: &FixtureCase) -> crate::Result<Vec<Record>> {
    let load = |stem: &str| m.array::<Ix2>(fx, stem);
    let (mut a, mut b, mut c) = (load("a")?, load("b")?, load("c")?);
    let case = format!("compat/{}", fx.name);
    let shape = [fx.batch, fx.n];
    let row = |kernel| Row {
        kernel,
        backend: Cpu::NAME,
        case: &case,
        shape: &shape,
        precision: Precision::F64,
    };
    let mut out = Vec::new();
    if fx.has("sanitized_a") {
        let s = compat::sanitize(a.view(), b.view(), c.view())?;
        let flat = |x: &Array2<f64>| x.iter().map(|&v| Complex64::from(v)).collect::<Vec<_>>();
        for (got, stem) in [
            (&s.a, "sanitized_a"),
            (&s.b, "sanitized_b"),
            (&s.c, "sanitized_c"),
        ] {
            out.push(within(
                &row("bk_core_sanitize"),
                &format!("{stem}_err_ratio"),
                &flat(got),
                &flat(&load(stem)?),
                tol::F64,
            ));
        }
        (a, b, c) = (s.a, s.b, s.c);
    }
    let z = Complex64::new(fx.z[0], fx.z[1]);
    let args = BkCoreArgs::new(a.view(), b.view(), c.view(), z)?;
    let load_complex = |stem: &str| -> crate::Result<Vec<Complex64>> {
        let (re, im) = (load(&format!("{stem}_re"))?, load(&format!("{stem}_im"))?);
        Ok(re
            .iter()
            .zip(&im)
            .map(|(&r, &i)| Complex64::new(r, i))
            .collect())
    };
    let exact = if fx.has("g_re") {
        Some(load_complex("g")?)
    } else {
        None
    };
    let modes: [(&str, &str, Array2<Complex32>); 3] = [
        (
            "bk_core_compat_vmap",
            "compat_vmap_g",
            compat::vmap(&args, VmapOptions::head()),
        ),
        (
            "bk_core_compat_vmap_bench",
            "compat_vmap_bench_g",
            compat::vmap(&args, VmapOptions::bench()),
        ),
        (
            "bk_core_compat_parallel_head",
            "compat_parallel_head_g",
            compat::parallel_head(&args),
        ),
    ];
    for (kernel, stem, got) in &modes {
        let got = widen(got);
        out.push(within(
            &row(kernel),
            "err_ratio_vs_emulation",
            &got,
            &load_complex(stem)?,
            tol::BK_CORE_COMPAT,
        ));
        if let Some(exact) = &exact {
            let s = ErrorStats::complex(&got, exact);
            out.push(row(kernel).record("max_abs_diff_vs_exact", s.max_abs, None));
        }
    }
    if fx.has("hybrid_grad_a") {
        let gf: Array3<f32> = m.array::<Ix3>(fx, "hybrid_gf")?.mapv(|v| v as f32);
        let saved = &modes[0].2;
        let got = hybrid_grad_a(saved.view(), gf.view(), None, DEFAULT_BLEND)?;
        let scale = term_scale(saved.view(), gf.view(), DEFAULT_BLEND);
        let want = load("hybrid_grad_a")?;
        let u = f64::from(f32::EPSILON) / 2.0;
        let worst =
            ndarray::Zip::from(&got)
                .and(&want)
                .and(&scale)
                .fold(0.0f64, |m, &g, &w, &s| {
                    let allowed = tol::BK_CORE_HYBRID_ULPS * u * (f64::from(s) + w.abs());
                    m.max((f64::from(g) - w).abs() / allowed)
                });
        out.push(row("bk_core_hybrid_grad").record(
            "err_ratio_vs_emulation",
            worst,
            Some(crate::Target::AtMost(1.0)),
        ));
    }
    Ok(out)
}
