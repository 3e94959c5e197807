//! Block-skip sparse attention's KPIs (design hyperbolic.md §6; seed 000 task 32.3, the
//! original's `sparse_hyperbolic_triton.py`): at 90 % sparsity (the original's top_k rule scaled
//! to 64-key blocks: k_b = ⌊0.05·⌈N/64⌉⌋ blocks per query block, the measured sparsity recorded)
//! the block-centroid selection plus the block-skip tensor-core forward against the dense
//! tensor-core forward in the same process, B·H = 8, D = 64, causal: goal ≥ 5× at N ≥ 4096.
//! Beside it, without a goal, the LSH selection (T = 4, h = 8, k_cap = 192, window 64) plus the
//! index attention over its lists (`sparse_attn_lsh`).

use crate::{CpuCtx, Family, Plot, Result};

/// The sparse_attn family.
pub struct SparseAttnFamily;

impl Family for SparseAttnFamily {
    fn stem(&self) -> &'static str {
        "sparse_attn"
    }

    /// No CPU rows: the reference is the oracle.
    /// Recall of the centroid selection against the exact top-k keys (design §6.4), on the
    /// GPU bench's data pattern at N 4096 with 2 heads and its k_b (≈ 91 % sparsity): the share
    /// of each query's exact top k_b·64 keys that its selected blocks hold. (The CUDA selection is
    /// tested to pick the same blocks up to f32 near-ties.)
    fn cpu(&self, ctx: &mut CpuCtx<'_>) -> Result<Option<Plot>> {
        use muse_reference::sparse_attn::{exact_topk, recall, select_centroid};
        use muse_verify::report::Site;
        let n = 4096usize;
        let x = ndarray::Array4::from_shape_fn((1, 2, n, 64), |(_, h, i, e)| {
            (((h * 7919 + i * 104_729 + e * 31) % 2000) as f64 / 2000.0 - 0.5) * 0.5
        });
        let nb = n.div_ceil(64);
        let kb = (nb / 20).max(1);
        let lists = select_centroid(x.view(), x.view(), 0.693, 64, kb)?;
        let exact = exact_topk(x.view(), x.view(), 0.693, kb * 64)?;
        let r = recall(&lists.to_indices(), &exact);
        let case = format!("sparse_hyperbolic_triton.py/B1xH2xN{n}xD64_kb{kb}");
        let shape = [1, 2, n, n, 64];
        let site = Site {
            kernel: "sparse_attn_selection",
            backend: "cpu",
            case: &case,
            shape: &shape,
            dtype: "f64",
        };
        ctx.report.records.push(site.record(
            &format!("recall_vs_exact_top{}", kb * 64),
            r,
            "",
            None,
        ));
        ctx.report
            .records
            .push(site.record("sparsity", lists.sparsity(), "", None));
        Ok(None)
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self, ctx: &mut crate::CudaCtx<'_>) -> Result<Option<Plot>> {
        use muse_cuda::hyp_attn_tc::{forward, ForwardWs, Problem};
        use muse_cuda::sparse_attn::{
            forward_indexed, forward_sparse, select_centroid, select_into, select_lsh,
            select_lsh_into, IndexedWs,
        };
        use muse_reference::hyp_attn::{HypAttnArgs, Mask};
        use muse_reference::sparse_attn::Lsh;
        use muse_verify::report::Site;
        use muse_verify::Target;

        use crate::records::{event_timing, speedup};
        use crate::timing::time_events;
        let gpu = ctx.gpu;
        for n in [4096usize, 8192, 16384] {
            let x = ndarray::Array4::from_shape_fn((1, 8, n, 64), |(_, h, i, e)| {
                (((h * 7919 + i * 104_729 + e * 31) % 2000) as f64 / 2000.0 - 0.5) * 0.5
            });
            let args = HypAttnArgs::new(x.view(), x.view(), x.view(), 0.693, 1.0, Mask::Causal)?;
            let p = Problem::upload(gpu, &args)?;
            let ws = ForwardWs::new(gpu, &p)?;
            let nb = n.div_ceil(64);
            let kb = (nb / 20).max(1);
            let lists = select_centroid(gpu, &p, kb)?;
            let td = time_events(gpu, 3, ctx.runs, || forward(gpu, &p, &ws))?;
            let ts = time_events(gpu, 3, ctx.runs, || {
                select_into(gpu, &p, &lists)?;
                forward_sparse(gpu, &p, &ws, &lists)
            })?;
            // the two halves apart: where the time goes
            let t_sel = time_events(gpu, 3, ctx.runs, || select_into(gpu, &p, &lists))?;
            let t_blk = time_events(gpu, 3, ctx.runs, || forward_sparse(gpu, &p, &ws, &lists))?;
            let computed: i64 = lists.counts.to_vec()?.iter().map(|&c| i64::from(c)).sum();
            let sparsity = 1.0 - computed as f64 / (8 * nb * (nb + 1) / 2) as f64;
            let case = format!("sparse_hyperbolic_triton.py/B1xH8xN{n}xD64_kb{kb}");
            let shape = [1, 8, n, n, 64];
            let site = Site {
                kernel: "sparse_attn",
                backend: "cuda",
                case: &case,
                shape: &shape,
                dtype: "bf16",
            };
            ctx.report.records.extend(event_timing(&site, &ts, None));
            ctx.report
                .records
                .push(site.record("sparsity", sparsity, "", None));
            let r = speedup(&site, "speedup_vs_dense_tc", td.median_us, ts.median_us);
            ctx.report.records.push(site.goal(
                "speedup_vs_dense_tc",
                r.value,
                "x",
                Target::AtLeast(5.0),
            ));
            let dense = Site {
                kernel: "sparse_attn_baseline_dense_tc",
                ..site
            };
            ctx.report.records.extend(event_timing(&dense, &td, None));
            let select = Site {
                kernel: "sparse_attn_selection_only",
                ..site
            };
            ctx.report
                .records
                .extend(event_timing(&select, &t_sel, None));
            let blocks = Site {
                kernel: "sparse_attn_blocks_only",
                ..site
            };
            ctx.report
                .records
                .extend(event_timing(&blocks, &t_blk, None));
            // LSH selection (T = 4 tables × h = 8 bits, k_cap 192, window 64) + index attention
            let lsh = Lsh::new(0x5eed, 4, 8, 64)?;
            let sel = select_lsh(gpu, &p, &lsh, 192, 64)?;
            let iws = IndexedWs::new(gpu, &p)?;
            let tl = time_events(gpu, 3, ctx.runs, || {
                select_lsh_into(gpu, &p, &sel)?;
                forward_indexed(gpu, &p, &iws, &sel.idx, sel.k_cap)
            })?;
            let lcase = format!("sparse_hyperbolic_triton.py/B1xH8xN{n}xD64_T4h8_k192_w64");
            let lsite = Site {
                kernel: "sparse_attn_lsh",
                case: &lcase,
                ..site
            };
            ctx.report.records.extend(event_timing(&lsite, &tl, None));
            ctx.report.records.push(speedup(
                &lsite,
                "speedup_vs_dense_tc",
                td.median_us,
                tl.median_us,
            ));
        }
        Ok(None)
    }
}
