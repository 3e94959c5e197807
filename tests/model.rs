//! The language model's registered verification cases (crates/muse-verify/src/suite/model.rs):
//! the three profiles' forwards against the numpy oracle and parity with the original's logits,
//! and the exact gradient against PyTorch autograd, on every backend (the CUDA half runs the
//! model's device path and trainer), and the layer case on the CPU
//! reference (the layer functions are the reference's).

use crate::common::{registered_case_passes, test_backends};

test_backends! {
    #[case::oracle_forward("model/oracle/forward")]
    #[case::parity_cpu("model/parity/logits_cpu")]
    #[case::parity_cuda("model/parity/logits_cuda")]
    #[case::grad_torch("model/grad/torch_autograd")]
    fn registered_case_passes(name: &str);
}

#[rstest::rstest]
#[case::oracle_layers("model/oracle/layers")]
fn cpu_only_case_passes(#[case] name: &str) -> anyhow::Result<()> {
    registered_case_passes(&muse::reference::Cpu, name)
}
