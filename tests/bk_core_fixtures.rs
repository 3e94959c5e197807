//! Agreement with the golden fixtures of the independent Python oracle (dense complex128
//! inverse; dense gradient formula cross-checked by finite differences; `fixtures/bk_core/gen.py`),
//! and the generated cases of `muse verify`. Targets: `muse_verify::suite::checks` (design §12).

use muse::verify::fixtures::Manifest;
use muse::verify::suite::{self, bk_core, Spec};

use crate::common::{registered_case_passes, test_backends};

test_backends! {
    #[case::well_conditioned("well_conditioned")]
    #[case::symmetric("symmetric")]
    #[case::hopping("hopping")]
    #[case::random_sign("random_sign")]
    #[case::n1("n1")]
    #[case::n2("n2")]
    #[case::head_layer("head_layer")]
    #[case::n4096_laplacian("n4096_laplacian")]
    #[case::n4096_random("n4096_random")]
    #[case::near_spectrum("near_spectrum")]
    #[case::dense_benchmark("dense/benchmark_b4_n256")]
    #[case::dense_laplacian("dense/laplacian_b4_n256")]
    #[case::dense_symmetric("dense/symmetric_b4_n256")]
    #[case::kpi_shape_benchmark("long/benchmark_b16_n4096")]
    #[case::kpi_shape_laplacian("long/laplacian_b16_n4096")]
    #[case::long_benchmark("long/benchmark_b1_n65536")]
    #[case::long_symmetric("long/symmetric_b1_n65536")]
    #[case::million_laplacian("long/laplacian_b1_n1000000")]
    #[case::million_symmetric("long/symmetric_b1_n1000000")]
    fn registered_case_passes(name: &str);
}

/// Every fixture with an exact output and every generated case of every family is listed in a
/// `registered_case_passes` grid (here, `hyp_attn.rs`, `poincare.rs`), so none is silently left out
/// of `cargo test`.
#[test]
fn every_registered_case_is_tested() -> anyhow::Result<()> {
    let listed = [
        include_str!("bk_core_fixtures.rs"),
        include_str!("hyp_attn.rs"),
        include_str!("poincare.rs"),
        include_str!("hyp_fixtures.rs"),
        include_str!("model.rs"),
        include_str!("quant_fixtures.rs"),
        include_str!("kv4.rs"),
    ]
    .concat();
    let m = Manifest::discover()?;
    for case in suite::registry(&m)
        .iter()
        .filter(|c| !matches!(c.spec, Spec::BkCore(bk_core::Spec::Compat(_))))
    {
        anyhow::ensure!(
            listed.contains(&format!("(\"{}\")", case.name)),
            "case {} has no test",
            case.name
        );
    }
    Ok(())
}

/// A fixture file whose bytes differ from the manifest's sha256 is refused.
#[test]
fn tampered_fixture_is_refused() -> anyhow::Result<()> {
    let mut m = Manifest::discover()?;
    let case = m
        .cases
        .iter_mut()
        .find(|c| c.name == "n2")
        .expect("n2 fixture");
    case.files.get_mut("a").expect("a").sha256 = "0".repeat(64);
    let case = m.case("n2")?.clone();
    let e = m
        .array::<ndarray::Ix2>(&case, "a")
        .expect_err("hash mismatch");
    anyhow::ensure!(e.to_string().contains("sha256"), "{e}");
    Ok(())
}
