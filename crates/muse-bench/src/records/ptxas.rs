//! The compiler's records: registers, spill bytes and stack frame of every kernel of every CUDA
//! file, from `ptxas -v` at build time (`muse_cuda::kernels::PTXAS_REPORTS`), as `ptxas` rows
//! (case = the CUDA function, dtype = its file). The hyp_dist family pushes them once per report.

use muse_verify::report::Site;
use muse_verify::Target;

/// Registers, spill bytes and stack frame of every kernel of every file (ptxas -v at build
/// time). Spills are gated at 0 bytes in every kernel (design §7: no shipped kernel spills); the
/// distance kernels' stack frames too (elsewhere a local array may hold one, as the window
/// attention's 3 KB tile does).
pub fn push(ctx: &mut crate::CudaCtx<'_>) {
    for (stem, report) in muse_cuda::kernels::PTXAS_REPORTS {
        for k in muse_cuda::ptxas::parse(report) {
            let site = Site {
                kernel: "ptxas",
                backend: "cuda",
                case: &k.name,
                shape: &[],
                dtype: stem,
            };
            let frame_gated = (*stem == "hyp_dist").then_some(Target::AtMost(0.0));
            ctx.report
                .records
                .push(site.record("registers", f64::from(k.registers), "", None));
            ctx.report.records.push(site.record(
                "spill_bytes",
                f64::from(k.spill_stores + k.spill_loads),
                "bytes",
                Some(Target::AtMost(0.0)),
            ));
            ctx.report.records.push(site.record(
                "stack_frame",
                f64::from(k.stack_frame),
                "bytes",
                frame_gated,
            ));
        }
    }
}
