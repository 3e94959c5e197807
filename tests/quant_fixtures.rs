//! The quantised families (`kv4`, `int8_dir`, `int8_ball`, `w4a8`, `acosh_lut`) against the
//! independent numpy/mpmath oracle (`fixtures/quant/gen.py`), through the registered `quant/*`
//! cases of `muse verify` (`crates/muse-verify/src/suite/quant.rs`): codes, zero points, packed
//! bytes and fp16 bits exactly, the arithmetic on the codes within `tol::QUANT_F64`, the errors
//! within the analytic bounds. CPU only: these cases check the references; the CUDA kernels are
//! checked against the references by the `kv4/*` cases and `tests/{kv4,hyp_int8,w4a8}.rs`.

use muse::reference::Cpu;

use crate::common::registered_case_passes;

#[rstest::rstest]
#[case::kv4_per_token_d64("quant/kv4/per_token_d64")]
#[case::kv4_per_token_d2("quant/kv4/per_token_d2")]
#[case::kv4_per_token_ties("quant/kv4/per_token_ties")]
#[case::kv4_per_token_const("quant/kv4/per_token_const")]
#[case::kv4_per_token_wide("quant/kv4/per_token_wide")]
#[case::kv4_per_channel_g64("quant/kv4/per_channel_g64")]
#[case::kv4_per_channel_g128_d64("quant/kv4/per_channel_g128_d64")]
#[case::int8_dir_d64_c0693("quant/int8_dir/d64_c0.693")]
#[case::int8_dir_d1_c001("quant/int8_dir/d1_c0.01")]
#[case::int8_dir_d200_c2("quant/int8_dir/d200_c2")]
#[case::int8_ball_d64_c1("quant/int8_ball/d64_c1")]
#[case::int8_ball_d3_c05("quant/int8_ball/d3_c0.5")]
#[case::w4a8_sym_m4_k256_n8_g128("quant/w4a8/sym_m4_k256_n8_g128")]
#[case::w4a8_asym_m4_k256_n8_g128("quant/w4a8/asym_m4_k256_n8_g128")]
#[case::w4a8_sym_m1_k64_n5_g32("quant/w4a8/sym_m1_k64_n5_g32")]
#[case::w4a8_asym_m3_k96_n6_g32("quant/w4a8/asym_m3_k96_n6_g32")]
#[case::w4a8_sym_every_nibble("quant/w4a8/sym_every_nibble")]
#[case::w4a8_asym_every_nibble("quant/w4a8/asym_every_nibble")]
#[case::acosh_lut_default_n256_u16("quant/acosh_lut/default_n256_u16")]
#[case::acosh_lut_default_n1024_u16("quant/acosh_lut/default_n1024_u16")]
#[case::acosh_lut_compat_256("quant/acosh_lut/compat_256")]
fn quant_case_passes_on_the_cpu(#[case] name: &str) -> anyhow::Result<()> {
    registered_case_passes(&Cpu, name)
}
