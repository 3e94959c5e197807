//! The masked linear-attention product out_i = Σ_{j ∈ mask(i)} (A_i·B_j)·C_j, the one primitive the
//! forward pass and all three gradients are made of (see [`super`]), in the two schedules:
//! recurrent (a running state S = Σ B_jᵀC_j, O(N·da·dc)) and chunked (the GPU's: per-chunk states
//! P_c = Σ_{j∈c} B_jᵀC_j, an exclusive prefix over chunks, then per chunk
//! A·S_c + mask(A·Bᵀ)·C). `crates/muse-cuda/kernels/lin_attn.cu` implements the chunked one.

use crate::Elem;

/// Which keys j each row i sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// j ≤ i.
    Causal,
    /// j ≥ i (the transposed mask, for gradients of the causal form).
    Anti,
    /// Every j.
    Full,
}

impl Direction {
    /// The direction of the transposed product (what the gradients with respect to B and C
    /// use): causal ↔ anti, full stays full.
    pub fn transposed(self) -> Self {
        match self {
            Direction::Causal => Direction::Anti,
            Direction::Anti => Direction::Causal,
            Direction::Full => Direction::Full,
        }
    }
    /// Whether row i sees key j.
    pub fn sees(self, i: usize, j: usize) -> bool {
        match self {
            Direction::Causal => j <= i,
            Direction::Anti => j >= i,
            Direction::Full => true,
        }
    }
    /// The kernel's integer code (0 causal, 1 anti, 2 full).
    pub fn code(self) -> i32 {
        match self {
            Direction::Causal => 0,
            Direction::Anti => 1,
            Direction::Full => 2,
        }
    }
}

/// One operand of the product: `rows` rows of `width` values at stride `stride` in `data`,
/// optionally mapped by φ = elu + 1 on read, and optionally widened by a trailing column of ones
/// (`aug`: the linear attention's normaliser z = Σφ(k) is the product with a ones column).
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a, F> {
    /// Row-major values.
    pub data: &'a [F],
    /// Elements between rows.
    pub stride: usize,
    /// Columns read from `data`.
    pub width: usize,
    /// Apply φ to every value read.
    pub phi: bool,
    /// Append a column of ones.
    pub aug: bool,
}

impl<'a, F: Elem> Operand<'a, F> {
    /// A plain (rows, width) operand.
    pub fn plain(data: &'a [F], width: usize) -> Self {
        Self {
            data,
            stride: width,
            width,
            phi: false,
            aug: false,
        }
    }
    /// With φ applied on read.
    pub fn phi(self) -> Self {
        Self { phi: true, ..self }
    }
    /// With a trailing ones column.
    pub fn aug(self) -> Self {
        Self { aug: true, ..self }
    }
    /// Columns including the ones column.
    pub fn wide(&self) -> usize {
        self.width + usize::from(self.aug)
    }
    /// Value (i, col) as the product sees it.
    pub fn at(&self, i: usize, col: usize) -> F {
        if col < self.width {
            let v = self.data[i * self.stride + col];
            if self.phi {
                phi(v)
            } else {
                v
            }
        } else {
            F::one()
        }
    }
}

/// φ(x) = elu(x) + 1: x + 1 for x > 0, eˣ otherwise (always > 0).
pub fn phi<F: Elem>(x: F) -> F {
    if x > F::zero() {
        x + F::one()
    } else {
        x.exp()
    }
}

/// φ′(x): 1 for x > 0, eˣ otherwise.
pub fn phi_prime<F: Elem>(x: F) -> F {
    if x > F::zero() {
        F::one()
    } else {
        x.exp()
    }
}

/// The product over `n` rows by the running state: (n, c.wide()) row-major.
pub fn recurrent<F: Elem>(
    a: &Operand<'_, F>,
    b: &Operand<'_, F>,
    c: &Operand<'_, F>,
    n: usize,
    dir: Direction,
) -> Vec<F> {
    let (da, dc) = (a.wide(), c.wide());
    debug_assert_eq!(b.wide(), da, "A and B share the contraction width");
    let mut state = vec![F::zero(); da * dc];
    let add = |state: &mut Vec<F>, j: usize| {
        for p in 0..da {
            let bv = b.at(j, p);
            for e in 0..dc {
                state[p * dc + e] += bv * c.at(j, e);
            }
        }
    };
    let mut out = vec![F::zero(); n * dc];
    let apply = |out: &mut Vec<F>, state: &Vec<F>, i: usize| {
        for e in 0..dc {
            out[i * dc + e] = (0..da).fold(F::zero(), |s, p| s + a.at(i, p) * state[p * dc + e]);
        }
    };
    match dir {
        Direction::Causal => {
            for i in 0..n {
                add(&mut state, i);
                apply(&mut out, &state, i);
            }
        }
        Direction::Anti => {
            for i in (0..n).rev() {
                add(&mut state, i);
                apply(&mut out, &state, i);
            }
        }
        Direction::Full => {
            (0..n).for_each(|j| add(&mut state, j));
            (0..n).for_each(|i| apply(&mut out, &state, i));
        }
    }
    out
}

/// The product over `n` rows in chunks of `chunk` rows (the GPU's schedule): (n, c.wide())
/// row-major.
pub fn chunked<F: Elem>(
    a: &Operand<'_, F>,
    b: &Operand<'_, F>,
    c: &Operand<'_, F>,
    n: usize,
    dir: Direction,
    chunk: usize,
) -> Vec<F> {
    let (da, dc) = (a.wide(), c.wide());
    debug_assert_eq!(b.wide(), da, "A and B share the contraction width");
    let chunks = n.div_ceil(chunk);
    let rows = |ch: usize| ch * chunk..((ch + 1) * chunk).min(n);
    // Per-chunk states P_c = Σ_{j∈c} B_jᵀ C_j.
    let mut states: Vec<Vec<F>> = (0..chunks)
        .map(|ch| {
            let mut p = vec![F::zero(); da * dc];
            for j in rows(ch) {
                for q in 0..da {
                    let bv = b.at(j, q);
                    for e in 0..dc {
                        p[q * dc + e] += bv * c.at(j, e);
                    }
                }
            }
            p
        })
        .collect();
    // Exclusive prefix (causal), suffix (anti) or total (full) over chunks, in place.
    let order: Vec<usize> = match dir {
        Direction::Anti => (0..chunks).rev().collect(),
        _ => (0..chunks).collect(),
    };
    let mut running = vec![F::zero(); da * dc];
    for &ch in &order {
        for (r, p) in running.iter_mut().zip(states[ch].iter_mut()) {
            let before = *r;
            *r += *p;
            *p = before;
        }
    }
    if dir == Direction::Full {
        states.iter_mut().for_each(|s| s.clone_from(&running));
    }
    let mut out = vec![F::zero(); n * dc];
    let mut score = vec![F::zero(); chunk * chunk];
    for (ch, s) in states.iter().enumerate() {
        let r = rows(ch);
        // The chunk's masked scores A_i·B_j, once.
        if dir != Direction::Full {
            for i in r.clone() {
                for j in r.clone() {
                    score[(i - r.start) * chunk + j - r.start] = if dir.sees(i, j) {
                        (0..da).fold(F::zero(), |acc, q| acc + a.at(i, q) * b.at(j, q))
                    } else {
                        F::zero()
                    };
                }
            }
        }
        for i in r.clone() {
            for e in 0..dc {
                let mut acc = (0..da).fold(F::zero(), |acc, q| acc + a.at(i, q) * s[q * dc + e]);
                if dir != Direction::Full {
                    for j in r.clone() {
                        acc += score[(i - r.start) * chunk + j - r.start] * c.at(j, e);
                    }
                }
                out[i * dc + e] = acc;
            }
        }
    }
    out
}
