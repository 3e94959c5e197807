//! Seeded initialisation with the original's BENCH-tree inits (design model.md §3.3, §3.7, §3.8,
//! §3.9, §3.13), matched in distribution (the RNG streams of PyTorch are not reproduced).

use std::collections::BTreeMap;

use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, StandardNormal, Uniform};

use crate::spec::{state_dict, TensorSpec};
use crate::{Config, Weights};

fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.sample::<f64, _>(StandardNormal) * std) as f32)
        .collect()
}

fn xavier_uniform(rng: &mut StdRng, out: usize, inp: usize) -> Vec<f32> {
    let a = (6.0 / (out + inp) as f64).sqrt();
    let u = Uniform::new_inclusive(-a, a).expect("a > 0");
    (0..out * inp).map(|_| u.sample(rng) as f32).collect()
}

/// Q factor (m, k) of a Gaussian (m, k) matrix, by modified Gram–Schmidt (k ≤ m).
fn gaussian_q(rng: &mut StdRng, m: usize, k: usize) -> Vec<Vec<f64>> {
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(k);
    while cols.len() < k {
        let mut v: Vec<f64> = (0..m).map(|_| rng.sample(StandardNormal)).collect();
        for q in &cols {
            let d: f64 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(q).for_each(|(a, b)| *a -= d * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-9 {
            cols.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    cols
}

/// Prime-bump init of an (m, n) matrix (design §3.13): W = U·diag(σ)·Vᵀ, σ the sorted, max-
/// normalised log p of k = min(m, n) primes drawn with weights ∝ log p / p^0.6, plus N(0, 0.1).
fn prime_bump(rng: &mut StdRng, m: usize, n: usize) -> Vec<f32> {
    let k = m.min(n);
    let mut primes: Vec<u64> = (2..(2 * k as u64).max(3))
        .filter(|&p| (2..p).take_while(|d| d * d <= p).all(|d| p % d != 0))
        .collect();
    if primes.is_empty() {
        primes = vec![2, 3, 5, 7, 11, 13, 17, 19];
    }
    let weights: Vec<f64> = primes
        .iter()
        .map(|&p| (p as f64).ln() / (p as f64).powf(0.6))
        .collect();
    let pick = WeightedIndex::new(&weights).expect("positive weights");
    let noise = Normal::new(0.0, 0.1f64.sqrt()).expect("std > 0");
    let mut sigma: Vec<f64> = (0..k)
        .map(|_| (primes[pick.sample(rng)] as f64).ln() + noise.sample(rng))
        .collect();
    sigma.sort_by(|a, b| b.total_cmp(a));
    let max = sigma[0].abs().max(1e-12);
    sigma.iter_mut().for_each(|s| *s /= max);
    let (u, v) = (gaussian_q(rng, m, k), gaussian_q(rng, n, k));
    let mut w = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            w[i * n + j] = (0..k).map(|r| u[r][i] * sigma[r] * v[r][j]).sum::<f64>() as f32;
        }
    }
    w
}

fn init_one(rng: &mut StdRng, spec: &TensorSpec) -> Vec<f32> {
    let name = spec.name.as_str();
    let n = spec.numel();
    let ends = |s: &str| name.ends_with(s);
    let fill = |v: f32| vec![v; n];
    if spec.component == "htt" {
        return if ends("phase_shift") {
            normal(rng, n, 0.1)
        } else {
            normal(rng, n, 0.02)
        };
    }
    if ends("position_embedding.weight") {
        return normal(rng, n, 0.02);
    }
    if ends("h0_diag_base") {
        return fill(-2.0);
    }
    if ends("h0_sub_base") || ends("h0_super_base") {
        return fill(1.0);
    }
    if name == "bk_hyperbolic.z" {
        return vec![0.0, 0.1];
    }
    if ends("layer_norm.weight") || ends("layer_norm_final.weight") || ends("bk_scale") {
        return fill(1.0);
    }
    if ends("epsilon_param") || ends("gate_sensitivity") {
        return fill(1.0);
    }
    if ends("T_conv.weight") {
        return prime_bump(rng, spec.shape[0], 3);
    }
    if spec.component == "bk_hyperbolic" || spec.component == "ar_ssm_fusion" {
        if ends("gate_proj.weight") {
            return fill(0.0);
        }
        if ends("gate_proj.bias") {
            return fill(1.0);
        }
        if ends("A_low") || ends("A_high") {
            return normal(rng, n, 0.01);
        }
        if spec.shape.len() == 2 {
            return xavier_uniform(rng, spec.shape[0], spec.shape[1]);
        }
        return fill(0.0);
    }
    if ends(".weight") && spec.shape.len() == 2 {
        // Every core nn.Linear: N(0, 1/fan_in) (LanguageModel._reset_parameters, BENCH).
        return normal(rng, n, (1.0 / spec.shape[1] as f64).sqrt());
    }
    fill(0.0)
}

/// A seeded initialisation of every tensor for `config`.
///
/// ```
/// let cfg = muse_model::Config::named("tiny").unwrap();
/// let a = muse_model::init::init(&cfg, 7);
/// assert_eq!(a.tensors, muse_model::init::init(&cfg, 7).tensors);
/// ```
pub fn init(config: &Config, seed: u64) -> Weights {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = BTreeMap::new();
    for spec in state_dict(config) {
        if spec.alias_of.is_some() {
            continue;
        }
        let data = init_one(&mut rng, &spec);
        tensors.insert(spec.name.clone(), (spec.shape.clone(), data));
    }
    Weights {
        config: config.clone(),
        tensors,
    }
}
