//! The quantised families (`kv4`, `int8_dir`, `int8_ball`, `w4a8`, `acosh_lut`) against the
//! independent numpy/mpmath oracle (`fixtures/quant/gen.py`), through the registered `quant/*`
//! cases of `muse verify` (`crates/muse-verify/src/suite/quant.rs`): codes, zero points, packed
//! bytes and fp16 bits exactly, the arithmetic on the codes within `tol::QUANT_F64`, the errors
//! within the analytic bounds. CPU only: no CUDA kernel of these families exists yet.

use muse::reference::Cpu;
use muse::verify::fixtures::Manifest;
use muse::verify::suite::quant::FAMILIES;

use crate::common::registered_case_passes;

#[test]
fn every_quant_fixture_passes_on_the_cpu() -> anyhow::Result<()> {
    let m = Manifest::discover()?;
    let mut ran = 0;
    for family in FAMILIES {
        let names: Vec<String> = m.family(family).map(|c| c.name.clone()).collect();
        anyhow::ensure!(!names.is_empty(), "no `{family}` fixtures in the manifest");
        for name in names {
            registered_case_passes(&Cpu, &format!("quant/{family}/{name}"))?;
            ran += 1;
        }
    }
    assert_eq!(
        ran, 21,
        "fixture cases (7 kv4, 3 int8_dir, 2 int8_ball, 6 w4a8, 3 acosh_lut)"
    );
    Ok(())
}
