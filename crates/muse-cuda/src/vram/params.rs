//! A model's parameters on the device as one f32 buffer per tensor (and one gradient buffer beside
//! each), built from the CPU reference's `for_each_param` walk, so that the device copy follows
//! the reference's names and order without a hand-written list.

use std::collections::HashMap;

use muse_reference::{Error, Result};

use crate::device::{Buf, Gpu, View};

/// Weights and gradients by tensor name. A tensor is a run of scalars of one name in the walk;
/// adjacent tensors can be merged into one buffer (the AR-SSM's U and V, one GEMM's weight).
pub struct DevParams {
    names: Vec<String>,
    index: HashMap<String, usize>,
    w: Vec<Buf<f32>>,
    g: Vec<Buf<f32>>,
}

/// The walk of a reference model's parameters: calls its argument on every (name, scalar).
pub type Walk<'a> = &'a mut dyn FnMut(&mut dyn FnMut(&str, &mut f64));

impl DevParams {
    /// Uploads the tensors of `walk` (f64 rounded to f32) with zeroed gradients. Each
    /// `(first, second, merged)` of `merge` joins a tensor named `P + first` with the next one if
    /// it is `P + second`, into one named `P + merged` (first's scalars, then second's).
    pub fn upload(gpu: &'static Gpu, walk: Walk<'_>, merge: &[(&str, &str, &str)]) -> Result<Self> {
        let mut groups: Vec<(String, Vec<f32>)> = Vec::new();
        walk(&mut |name, v| match groups.last_mut() {
            Some((n, vals)) if n == name => vals.push(*v as f32),
            _ => groups.push((name.to_string(), vec![*v as f32])),
        });
        let mut merged: Vec<(String, Vec<f32>)> = Vec::new();
        let mut it = groups.into_iter().peekable();
        while let Some((name, mut vals)) = it.next() {
            let joined = merge.iter().find_map(|(a, b, m)| {
                let p = name.strip_suffix(a)?;
                let next = it.peek()?;
                (next.0 == format!("{p}{b}")).then(|| format!("{p}{m}"))
            });
            match joined {
                Some(m) => {
                    let (_, second) = it.next().expect("peeked");
                    vals.extend(second);
                    merged.push((m, vals));
                }
                None => merged.push((name, vals)),
            }
        }
        let mut out = Self {
            names: Vec::new(),
            index: HashMap::new(),
            w: Vec::new(),
            g: Vec::new(),
        };
        for (name, vals) in merged {
            let g = gpu.alloc::<f32>(vals.len())?;
            super::fill(gpu, g.view(), 0.0)?;
            out.index.insert(name.clone(), out.names.len());
            out.names.push(name);
            out.w.push(gpu.upload(&vals)?);
            out.g.push(g);
        }
        Ok(out)
    }

    fn at(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| Error::Backend {
            backend: "cuda",
            message: format!("vram: the model has no tensor `{name}`"),
        })
    }

    /// The weight `name`.
    pub fn w(&self, name: &str) -> Result<&Buf<f32>> {
        Ok(&self.w[self.at(name)?])
    }

    /// The weight `name` as a view.
    pub fn wv(&self, name: &str) -> Result<View<'_, f32>> {
        Ok(self.w(name)?.view())
    }

    /// The gradient of `name` (accumulated into by the backward).
    pub fn g(&self, name: &str) -> Result<View<'_, f32>> {
        Ok(self.g[self.at(name)?].view())
    }

    /// Zeroes every gradient.
    pub fn zero_grads(&self, gpu: &Gpu) -> Result<()> {
        self.g
            .iter()
            .try_for_each(|g| super::fill(gpu, g.view(), 0.0))
    }

    /// Every gradient, concatenated in the walk's order (the order `upload` read the scalars).
    pub fn grads(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for g in &self.g {
            out.extend(g.to_vec()?);
        }
        Ok(out)
    }

    /// Scalars in all the weights (= in all the gradients).
    pub fn count(&self) -> usize {
        self.w.iter().map(Buf::len).sum()
    }

    /// Bytes of the weights (the gradients take as many).
    pub fn bytes(&self) -> usize {
        4 * self.count()
    }
}

/// Writes `flat` (in the walk's order, as [`DevParams::grads`]) into the scalars of `walk`.
pub fn write_back(flat: &[f32], walk: Walk<'_>) -> Result<()> {
    let mut i = 0;
    walk(&mut |_, v| {
        *v = flat.get(i).map_or(f64::NAN, |&x| f64::from(x));
        i += 1;
    });
    if i != flat.len() {
        return Err(Error::Backend {
            backend: "cuda",
            message: format!("vram: {} gradients for {i} parameters", flat.len()),
        });
    }
    Ok(())
}
