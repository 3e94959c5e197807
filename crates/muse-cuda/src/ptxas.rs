//! ptxas resource reports: `build.rs` compiles every kernel file with `-Xptxas -v` and keeps the
//! report as `kernels::<stem>::PTXAS` (all of them in `kernels::PTXAS_REPORTS`, with the `cuda`
//! feature); [`parse`] turns one into per-kernel registers, spill stores and loads, stack frame
//! and static shared memory, for the GPU report and for the no-spill check of `hyp_dist`.

/// One kernel's resources as ptxas reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelUsage {
    /// The (unmangled) kernel name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of stack frame per thread.
    pub stack_frame: u32,
    /// Bytes of register spill stores.
    pub spill_stores: u32,
    /// Bytes of register spill loads.
    pub spill_loads: u32,
    /// Bytes of static shared memory per CTA.
    pub smem: u32,
    /// Named barriers used.
    pub barriers: u32,
}

impl KernelUsage {
    /// Whether the kernel spills registers (stores or loads) or needs a stack frame.
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0 || self.stack_frame > 0
    }
}

/// The number just before `unit` in `text` (`"40 registers"` → 40 for unit `registers`).
fn number_before(text: &str, unit: &str) -> Option<u32> {
    let at = text.find(unit)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

/// The index of kernel `name` in `out`, added if new.
fn entry(out: &mut Vec<KernelUsage>, name: &str) -> usize {
    match out.iter().position(|k| k.name == name) {
        Some(i) => i,
        None => {
            out.push(KernelUsage {
                name: name.to_string(),
                ..KernelUsage::default()
            });
            out.len() - 1
        }
    }
}

/// Parses a ptxas `-v` report into one entry per kernel, in the report's order.
///
/// ```
/// let report = "\
/// ptxas info    : Compiling entry function 'k_f32' for 'sm_90'
/// ptxas info    : Function properties for k_f32
///     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
/// ptxas info    : Used 40 registers, used 1 barriers, 136 bytes smem, 380 bytes cmem[0]
/// ";
/// let k = &muse_cuda::ptxas::parse(report)[0];
/// assert_eq!((k.name.as_str(), k.registers, k.spill_stores, k.smem), ("k_f32", 40, 4, 136));
/// assert!(k.spills());
/// ```
pub fn parse(report: &str) -> Vec<KernelUsage> {
    let mut out: Vec<KernelUsage> = Vec::new();
    // The entry whose "Function properties" / "Used" lines come next.
    let mut current: Option<usize> = None;
    for line in report.lines() {
        let body = line
            .strip_prefix("ptxas info")
            .map(|r| r.trim_start_matches([' ', ':']).trim())
            .unwrap_or(line.trim());
        if let Some(rest) = body.strip_prefix("Compiling entry function") {
            let name = rest.trim().trim_start_matches('\'');
            let name = name.split('\'').next().unwrap_or(name);
            current = Some(entry(&mut out, name));
        } else if let Some(rest) = body.strip_prefix("Function properties for") {
            let name = rest.trim();
            // Properties of non-entry (device) functions are not kernels: skip them.
            current = out
                .iter()
                .position(|k| k.name == name)
                .or_else(|| (!name.starts_with("_Z")).then(|| entry(&mut out, name)));
        } else if body.contains("bytes stack frame") {
            if let Some(i) = current {
                let k = &mut out[i];
                k.stack_frame = number_before(body, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(body, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(body, "bytes spill loads").unwrap_or(0);
            }
        } else if let Some(rest) = body.strip_prefix("Used") {
            if let Some(i) = current {
                let k = &mut out[i];
                k.registers = number_before(rest, "registers").unwrap_or(0);
                k.barriers = rest
                    .split("used")
                    .nth(1)
                    .and_then(|r| number_before(r, "barriers"))
                    .unwrap_or(0);
                k.smem = number_before(rest, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// A Markdown table of every kernel of `report` (`stem` names the file), for the GPU report.
///
/// ```
/// let t = muse_cuda::ptxas::table("hyp_dist", "ptxas info    : Function properties for k\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\nptxas info    : Used 32 registers, used 0 barriers\n");
/// assert!(t.contains("| hyp_dist | k | 32 | 0 | 0 | 0 | 0 |"));
/// ```
pub fn table(stem: &str, report: &str) -> String {
    let mut t = String::from(
        "| file | kernel | registers | spill stores (B) | spill loads (B) | stack (B) | smem (B) |\n|---|---|---|---|---|---|---|\n",
    );
    for k in parse(report) {
        t.push_str(&format!(
            "| {stem} | {} | {} | {} | {} | {} | {} |\n",
            k.name, k.registers, k.spill_stores, k.spill_loads, k.stack_frame, k.smem
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_every_field_and_skips_device_functions() {
        let report = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'a_f64' for 'sm_90'
ptxas info    : Function properties for _Z6helperPf
    16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Function properties for a_f64
    56 bytes stack frame, 88 bytes spill stores, 56 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 56 bytes cumulative stack size, 16448 bytes smem
ptxas info    : Function properties for b_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
";
        let k = parse(report);
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(
            (
                k[0].registers,
                k[0].stack_frame,
                k[0].spill_stores,
                k[0].spill_loads
            ),
            (255, 56, 88, 56)
        );
        assert_eq!((k[0].barriers, k[0].smem), (1, 16448));
        assert_eq!(
            (k[1].name.as_str(), k[1].registers, k[1].spills()),
            ("b_f32", 32, false)
        );
    }
}

/// The compiled kernels' reports (`cuda` feature, not `ci-check`): `hyp_dist` must not spill,
/// and every file's table is printed (`cargo test -p muse-cuda --features cuda -- --nocapture`).
/// These tests read constants only, so they run without a GPU.
#[cfg(all(test, feature = "cuda", not(feature = "ci-check")))]
mod compiled {
    use super::{parse, table};
    use crate::kernels;

    #[test]
    fn hyp_dist_kernels_do_not_spill() {
        let usage = parse(kernels::hyp_dist::PTXAS);
        for name in [
            kernels::hyp_dist::ROWS_F32,
            kernels::hyp_dist::ROWS_F64,
            kernels::hyp_dist::PAIRS_F32,
            kernels::hyp_dist::PAIRS_F64,
        ] {
            let k = usage.iter().find(|k| k.name == name).unwrap_or_else(|| {
                panic!(
                    "{name} is not in the ptxas report:\n{}",
                    kernels::hyp_dist::PTXAS
                )
            });
            assert!(!k.spills(), "{name} spills: {k:?}");
        }
    }

    #[test]
    fn every_file_has_a_report() {
        for (stem, report) in kernels::PTXAS_REPORTS {
            let usage = parse(report);
            assert!(!usage.is_empty(), "{stem}: empty ptxas report");
            println!("{}", table(stem, report));
            for k in usage.iter().filter(|k| k.spills()) {
                println!("note: {stem}::{} spills ({k:?})", k.name);
            }
        }
    }
}
