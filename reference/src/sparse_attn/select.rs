//! Key selection for sparse attention: block centroids (default) and seeded SimHash LSH, the exact
//! top-k they are measured against, and recall.

use ndarray::{Array3, Array4, ArrayView4};

use super::OP;
use crate::poincare::maps::dist_tangent;
use crate::poincare::Curvature;
use crate::{splitmix64, Error, Result};

/// Key blocks per query block: blocks [B, H, ⌈N/BM⌉, K_max] (−1 padded) and their counts.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockLists {
    /// BM, rows per block (queries and keys).
    pub block: usize,
    /// K_max, the list width.
    pub k_max: usize,
    /// (B, H, N).
    pub dims: (usize, usize, usize),
    /// [B, H, ⌈N/BM⌉, K_max] row-major, −1 past each count.
    pub blocks: Vec<i32>,
    /// [B, H, ⌈N/BM⌉].
    pub count: Vec<usize>,
}

impl BlockLists {
    /// ⌈N/BM⌉.
    pub fn query_blocks(&self) -> usize {
        self.dims.2.div_ceil(self.block)
    }

    fn at(&self, b: usize, h: usize, qb: usize) -> usize {
        (b * self.dims.1 + h) * self.query_blocks() + qb
    }

    /// The key blocks listed for query block `qb` of (b, h).
    pub fn blocks_of(&self, b: usize, h: usize, qb: usize) -> &[i32] {
        let at = self.at(b, h, qb);
        &self.blocks[at * self.k_max..at * self.k_max + self.count[at]]
    }

    /// 1 − computed / causally admissible key tiles (design §6).
    pub fn sparsity(&self) -> f64 {
        let nqb = self.query_blocks();
        let admissible: usize = self.dims.0 * self.dims.1 * nqb * (nqb + 1) / 2;
        1.0 - self.count.iter().sum::<usize>() as f64 / admissible as f64
    }

    /// Fails unless the lists were built for (B, H, N) = the shape of `q`.
    pub fn check_for(&self, q: (usize, usize, usize, usize)) -> Result<()> {
        if (q.0, q.1, q.2) != self.dims {
            return Err(Error::Shape {
                op: OP,
                arg: "lists",
                expected: format!("built for [B, H, N] = [{}, {}, {}]", q.0, q.1, q.2),
                got: vec![self.dims.0, self.dims.1, self.dims.2],
            });
        }
        Ok(())
    }

    /// The keys each query attends (its listed blocks ∩ j ≤ i), as idx [B, H, N, K] (−1 padded).
    pub fn to_indices(&self) -> Array4<i32> {
        let (b, h, n) = self.dims;
        let width = self.k_max * self.block;
        let mut idx = Array4::from_elem((b, h, n, width), -1);
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..n {
                    let mut js: Vec<usize> = self
                        .blocks_of(bi, hi, i / self.block)
                        .iter()
                        .flat_map(|&kb| {
                            kb as usize * self.block..((kb as usize + 1) * self.block).min(i + 1)
                        })
                        .collect();
                    js.sort_unstable();
                    for (slot, j) in js.into_iter().enumerate() {
                        idx[[bi, hi, i, slot]] = j as i32;
                    }
                }
            }
        }
        idx
    }
}

fn row(a: &ArrayView4<'_, f64>, b: usize, h: usize, i: usize) -> Vec<f64> {
    a.slice(ndarray::s![b, h, i, ..]).to_vec()
}

fn centroids(a: &ArrayView4<'_, f64>, b: usize, h: usize, block: usize) -> Vec<Vec<f64>> {
    let (n, d) = (a.dim().2, a.dim().3);
    (0..n.div_ceil(block))
        .map(|blk| {
            let rows = blk * block..((blk + 1) * block).min(n);
            let len = rows.len() as f64;
            (0..d)
                .map(|e| rows.clone().map(|i| a[[b, h, i, e]]).sum::<f64>() / len)
                .collect()
        })
        .collect()
}

/// Block-centroid selection: for each query block, the diagonal block and the k_b − 1 earlier key
/// blocks whose centroid scores highest (−d between the mean tangent vectors; ties: the lower
/// block), in that order. `k_blocks ≥ 1`, `block ≥ 1`.
pub fn select_centroid(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    c: f64,
    block: usize,
    k_blocks: usize,
) -> Result<BlockLists> {
    super::check_qkv(&q, &k, &k)?;
    let s = Curvature::named(OP, "c", c)?.s();
    for (arg, v) in [("block", block), ("k_blocks", k_blocks)] {
        if v == 0 {
            return Err(Error::Domain {
                op: OP,
                arg,
                rule: "must be at least 1".into(),
            });
        }
    }
    let (b, h, n, _) = q.dim();
    let nqb = n.div_ceil(block);
    let mut lists = BlockLists {
        block,
        k_max: k_blocks,
        dims: (b, h, n),
        blocks: vec![-1; b * h * nqb * k_blocks],
        count: vec![0; b * h * nqb],
    };
    for bi in 0..b {
        for hi in 0..h {
            let (cq, ck) = (centroids(&q, bi, hi, block), centroids(&k, bi, hi, block));
            for (qb, cqb) in cq.iter().enumerate() {
                let mut others: Vec<(f64, usize)> = (0..qb)
                    .map(|kb| (-dist_tangent(s, cqb, &ck[kb]), kb))
                    .collect();
                others.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                let chosen: Vec<usize> = std::iter::once(qb)
                    .chain(others.into_iter().map(|(_, kb)| kb))
                    .take(k_blocks)
                    .collect();
                let at = lists.at(bi, hi, qb);
                for (slot, &kb) in chosen.iter().enumerate() {
                    lists.blocks[at * k_blocks + slot] = kb as i32;
                }
                lists.count[at] = chosen.len();
            }
        }
    }
    Ok(lists)
}

/// SimHash hyperplanes: T tables × h bits × D, standard normal from a seed (Box–Muller over
/// splitmix64), stored with the model so a selection can be reproduced.
#[derive(Debug, Clone, PartialEq)]
pub struct Lsh {
    /// [T, h, D].
    pub planes: Array3<f64>,
}

impl Lsh {
    /// Seeded hyperplanes; `bits ≤ 31`.
    pub fn new(seed: u64, tables: usize, bits: usize, dim: usize) -> Result<Self> {
        if tables == 0 || bits == 0 || bits > 31 || dim == 0 {
            return Err(Error::Domain {
                op: OP,
                arg: "lsh",
                rule: format!(
                    "needs tables ≥ 1, 1 ≤ bits ≤ 31 and D ≥ 1, got {tables}, {bits}, {dim}"
                ),
            });
        }
        let mut st = seed;
        let mut uniform = || {
            st = splitmix64(st);
            ((st >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let planes = Array3::from_shape_simple_fn((tables, bits, dim), || {
            (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()
        });
        Ok(Self { planes })
    }

    /// The h-bit code of `u` in table `t`: bit i set when ⟨plane_i, u⟩ ≥ 0 (the direction's sign).
    pub fn code(&self, t: usize, u: &[f64]) -> u32 {
        let planes = self.planes.index_axis(ndarray::Axis(0), t);
        planes
            .outer_iter()
            .enumerate()
            .map(|(bit, p)| {
                u32::from(p.iter().zip(u).map(|(a, b)| a * b).sum::<f64>() >= 0.0) << bit
            })
            .sum()
    }
}

/// LSH selection: for each query i, the keys j ≤ i sharing its code in any table, plus the local
/// window i − window < j ≤ i, capped at `k_cap` by exact score −d (ties: the lower index); idx
/// [B, H, N, k_cap], ascending, −1 padded.
pub fn select_lsh(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    c: f64,
    lsh: &Lsh,
    k_cap: usize,
    window: usize,
) -> Result<Array4<i32>> {
    super::check_qkv(&q, &k, &k)?;
    let s = Curvature::named(OP, "c", c)?.s();
    let (b, h, n, d) = q.dim();
    if lsh.planes.dim().2 != d {
        return Err(Error::Shape {
            op: OP,
            arg: "lsh",
            expected: format!("hyperplanes [T, h, D] with D = {d}"),
            got: lsh.planes.shape().to_vec(),
        });
    }
    if k_cap == 0 {
        return Err(Error::Domain {
            op: OP,
            arg: "k_cap",
            rule: "must be at least 1".into(),
        });
    }
    let tables = lsh.planes.dim().0;
    let mut idx = Array4::from_elem((b, h, n, k_cap), -1);
    for bi in 0..b {
        for hi in 0..h {
            let kc: Vec<Vec<u32>> = (0..n)
                .map(|j| {
                    (0..tables)
                        .map(|t| lsh.code(t, &row(&k, bi, hi, j)))
                        .collect()
                })
                .collect();
            for i in 0..n {
                let qi = row(&q, bi, hi, i);
                let qc: Vec<u32> = (0..tables).map(|t| lsh.code(t, &qi)).collect();
                let cands =
                    (0..=i).filter(|&j| j + window > i || (0..tables).any(|t| kc[j][t] == qc[t]));
                let top = top_by_score(s, &qi, &k, bi, hi, cands, k_cap);
                for (slot, j) in top.into_iter().enumerate() {
                    idx[[bi, hi, i, slot]] = j as i32;
                }
            }
        }
    }
    Ok(idx)
}

fn top_by_score(
    s: f64,
    qi: &[f64],
    k: &ArrayView4<'_, f64>,
    b: usize,
    h: usize,
    cands: impl Iterator<Item = usize>,
    cap: usize,
) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = cands
        .map(|j| (-dist_tangent(s, qi, &row(k, b, h, j)), j))
        .collect();
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let mut top: Vec<usize> = scored.into_iter().take(cap).map(|(_, j)| j).collect();
    top.sort_unstable();
    top
}

/// The exact causal top-k keys of each query by −d (ties: the lower index), idx [B, H, N, k].
pub fn exact_topk(
    q: ArrayView4<'_, f64>,
    k: ArrayView4<'_, f64>,
    c: f64,
    kk: usize,
) -> Result<Array4<i32>> {
    super::check_qkv(&q, &k, &k)?;
    let s = Curvature::named(OP, "c", c)?.s();
    let (b, h, n, _) = q.dim();
    let mut idx = Array4::from_elem((b, h, n, kk), -1);
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..n {
                let top = top_by_score(s, &row(&q, bi, hi, i), &k, bi, hi, 0..=i, kk);
                for (slot, j) in top.into_iter().enumerate() {
                    idx[[bi, hi, i, slot]] = j as i32;
                }
            }
        }
    }
    Ok(idx)
}

/// Mean over queries of |selected ∩ exact| / |exact| (−1 entries ignored).
pub fn recall(selected: &Array4<i32>, exact: &Array4<i32>) -> f64 {
    let (b, h, n, _) = exact.dim();
    let mut total = 0.0;
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..n {
                let sel: std::collections::BTreeSet<i32> = selected
                    .slice(ndarray::s![bi, hi, i, ..])
                    .iter()
                    .copied()
                    .filter(|&j| j >= 0)
                    .collect();
                let ex: Vec<i32> = exact
                    .slice(ndarray::s![bi, hi, i, ..])
                    .iter()
                    .copied()
                    .filter(|&j| j >= 0)
                    .collect();
                total +=
                    ex.iter().filter(|j| sel.contains(j)).count() as f64 / ex.len().max(1) as f64;
            }
        }
    }
    total / (b * h * n) as f64
}
