//! The ResNet-BK block and the whole core (design model.md §2.2, §3.3–3.5).

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis, Zip};
use num_complex::Complex64;

use super::structure::{run, ModelSteps};
use super::{
    ar_ssm, htt_decode, htt_embed, layer_norm, linear, softplus, window_attention_with,
    BlockWeights, ModelDims, ModelWeights, Numerics,
};
use crate::bk_core::{exact, BkCoreArgs};
use crate::{Elem, Error, Result};

const OP: &str = "model";

/// The gate g = σ(γ_gate·|Im G_ii|) of one block on its normalised input x (B, N, D), (B, N):
/// potential v = clamp(v_proj(x), ±3), G = diag((H0 + diag(v) − z)⁻¹) with
/// z = i·(softplus(ε) + 1e-6 + γ), H0 from the block's buffers.
pub fn bk_gate<F: Elem>(
    w: &BlockWeights<F>,
    x: ArrayView3<'_, F>,
    num: &Numerics,
) -> Result<Array2<F>> {
    let (b, n, _) = x.dim();
    let three = F::of(3.0);
    let v = linear(&w.v_proj, x).index_axis_move(Axis(2), 0);
    let v = v.mapv(|e| e.max(-three).min(three));
    let [h_diag, h_sup, h_sub] = &w.h0;
    let clamp = |e: f64, m: f64| if num.complex64 { e.clamp(-m, m) } else { e };
    let mut a = Array2::zeros((b, n));
    Zip::from(a.rows_mut())
        .and(v.rows())
        .for_each(|mut dst, src| {
            for t in 0..n {
                dst[t] = clamp(h_diag[t] + src[t].to_f64_exact(), 100.0);
            }
        });
    let off =
        |h: &ndarray::Array1<f64>| Array2::from_shape_fn((b, n - 1), |(_, t)| clamp(h[t], 10.0));
    let (sup, sub) = (off(h_sup), off(h_sub));
    let im = softplus(w.epsilon) + F::of(1e-6) + w.gamma;
    let im = if num.complex64 {
        f64::from(im.to_f64_exact() as f32)
    } else {
        im.to_f64_exact()
    };
    let args = BkCoreArgs::new(a.view(), sup.view(), sub.view(), Complex64::new(0.0, im))?;
    let im_g: Array2<f64> = if num.complex64 {
        exact::forward::<f64>(&args)?.mapv(|g| f64::from(g.im as f32))
    } else if F::PRECISION == crate::Precision::F64 {
        exact::forward::<f64>(&args)?.mapv(|g| g.im)
    } else {
        exact::forward::<f32>(&args)?.mapv(|g| f64::from(g.im))
    };
    let gs = w.gate_sensitivity;
    Ok(im_g.mapv(|g| {
        let e = F::of(g).abs() * gs;
        F::one() / (F::one() + (-e).exp())
    }))
}

/// h + LN_out(g⊙local + (1 − g)⊙global) (the step `mix_norm_residual`).
pub fn mix_norm_residual<F: Elem>(
    w: &BlockWeights<F>,
    h: ArrayView3<'_, F>,
    mut local: Array3<F>,
    global: ArrayView3<'_, F>,
    g: ArrayView2<'_, F>,
) -> Array3<F> {
    Zip::from(local.lanes_mut(Axis(2)))
        .and(global.lanes(Axis(2)))
        .and(g)
        .for_each(|mut l, gl, &gg| {
            Zip::from(&mut l)
                .and(&gl)
                .for_each(|a, &b| *a = gg * *a + (F::one() - gg) * b);
        });
    &h + &layer_norm(&w.out_norm, local.view())
}

/// One block: h + LN_out(g⊙local(x) + (1 − g)⊙global(x)) with x = LN(h), the steps of
/// [`super::structure::run`] for one block.
pub fn block<F: Elem>(
    d: &ModelDims,
    w: &BlockWeights<F>,
    h: ArrayView3<'_, F>,
    num: &Numerics,
) -> Result<Array3<F>> {
    let x = layer_norm(&w.norm, h);
    let g = bk_gate(w, x.view(), num)?;
    let local = window_attention_with(
        &w.attn,
        x.view(),
        d.heads,
        d.window,
        num.attention,
        num.quant,
    )?;
    let global = ar_ssm(&w.ssm, x.view(), num.scan, num.conv);
    Ok(mix_norm_residual(w, h, local, global.view(), g.view()))
}

/// The CPU reference's steps of the model.
struct CpuSteps<'a, F: Elem> {
    d: &'a ModelDims,
    w: &'a ModelWeights<F>,
    num: &'a Numerics,
    ids: ArrayView2<'a, usize>,
}

impl<F: Elem> ModelSteps for CpuSteps<'_, F> {
    type Act = Array3<F>;
    type Gate = Array2<F>;
    type Logits = Array3<F>;

    fn embed(&mut self) -> Result<Array3<F>> {
        let mut h = htt_embed(&self.w.htt, self.ids, self.d.d_model);
        h += &self.w.pos.slice(s![..self.ids.ncols(), ..]);
        Ok(h)
    }
    fn pre_norm(&mut self, l: usize, h: &Array3<F>) -> Result<Array3<F>> {
        Ok(layer_norm(&self.w.blocks[l].norm, h.view()))
    }
    fn gate(&mut self, l: usize, x: &Array3<F>) -> Result<Array2<F>> {
        bk_gate(&self.w.blocks[l], x.view(), self.num)
    }
    fn local(&mut self, l: usize, x: &Array3<F>) -> Result<Array3<F>> {
        window_attention_with(
            &self.w.blocks[l].attn,
            x.view(),
            self.d.heads,
            self.d.window,
            self.num.attention,
            self.num.quant,
        )
    }
    fn global(&mut self, l: usize, x: &Array3<F>) -> Result<Array3<F>> {
        Ok(ar_ssm(
            &self.w.blocks[l].ssm,
            x.view(),
            self.num.scan,
            self.num.conv,
        ))
    }
    fn mix_norm_residual(
        &mut self,
        l: usize,
        h: Array3<F>,
        local: Array3<F>,
        global: Array3<F>,
        gate: Array2<F>,
    ) -> Result<Array3<F>> {
        Ok(mix_norm_residual(
            &self.w.blocks[l],
            h.view(),
            local,
            global.view(),
            gate.view(),
        ))
    }
    fn final_norm(&mut self, h: &Array3<F>) -> Result<Array3<F>> {
        Ok(layer_norm(&self.w.final_norm, h.view()))
    }
    fn decode(&mut self, x: &Array3<F>) -> Result<Array3<F>> {
        Ok(htt_decode(&self.w.htt, x.view(), self.d.vocab))
    }
}

pub(crate) fn check_ids(d: &ModelDims, ids: &ArrayView2<'_, usize>) -> Result<()> {
    let (b, n) = ids.dim();
    if b == 0 || n == 0 {
        return Err(Error::Empty {
            op: OP,
            arg: "ids",
            dim: if b == 0 { "B" } else { "N" },
            shape: vec![b, n],
        });
    }
    if n > d.n_seq {
        return Err(Error::Domain {
            op: OP,
            arg: "ids",
            rule: format!(
                "has N = {n} positions, more than the config's n_seq = {}",
                d.n_seq
            ),
        });
    }
    if let Some(((i, j), &t)) = ids.indexed_iter().find(|(_, &t)| t >= d.vocab) {
        return Err(Error::Domain {
            op: OP,
            arg: "ids",
            rule: format!("must be < vocab_size = {}, got {t} at [{i}, {j}]", d.vocab),
        });
    }
    Ok(())
}

/// The logits (B, N, V) of token ids (B, N), N ≤ n_seq, every id < V.
pub fn forward<F: Elem>(
    d: &ModelDims,
    w: &ModelWeights<F>,
    num: &Numerics,
    ids: ArrayView2<'_, usize>,
) -> Result<Array3<F>> {
    check_ids(d, &ids)?;
    let mut steps = CpuSteps { d, w, num, ids };
    let logits = run(&mut steps, w.blocks.len())?;
    check_logits(&logits)?;
    Ok(logits)
}

/// Refuses logits with a NaN or an infinity, naming the first.
pub(crate) fn check_logits<F: Elem>(logits: &Array3<F>) -> Result<()> {
    match logits.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some((idx, &v)) => Err(Error::NonFinite {
            op: OP,
            arg: "logits",
            index: vec![idx.0, idx.1, idx.2],
            value: v.to_f64_exact(),
        }),
        None => Ok(()),
    }
}
