//! The attention workload trace: alloc/free events of the LM's windowed attention forward and
//! backward at design `hyperbolic.md` §15's protocol shapes, and [`replay`] on a [`Pool`].
//!
//! Buffers follow the LM shape `[C, H, 64, D]` with `C = ⌈B·T/64⌉` windows of 64 tokens
//! (`T = N`, or a ragged `T ∈ [N/2, N]` per step). Per layer, forward: Q, K, V, the two ball
//! projections (temporaries), O and the f32 log-sum-exp `[C, H, 64]`; the temporaries go first,
//! LIFO. Backward, layers in reverse: dO, the f32 Δ = rowsum(dO∘O), the recomputed projections,
//! an f32 dQ accumulator, then dQ, dK, dV; temporaries are freed LIFO, then the layer's saved
//! tensors. The gradients dQ, dK, dV (the step's outputs) live until the step ends.
//! Tests: `tests/trace.rs`.

use std::collections::HashMap;

use crate::error::{PoolError, Result};
use crate::pool::{Pool, PoolBlock};
use crate::source::SlabSource;

/// Tokens per attention window (design `model.md`: windowed attention, W = 64).
pub const WINDOW: usize = 64;

/// Element type of the activation buffers (Δ, log-sum-exp and the dQ accumulator are f32).
///
/// ```
/// use muse_pool::trace::Dtype;
/// assert_eq!((Dtype::F32.bytes(), Dtype::Bf16.bytes()), (4, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 4-byte floats.
    F32,
    /// 2-byte brain floats.
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

/// One attention configuration of the protocol.
///
/// ```
/// use muse_pool::trace::{AttnShape, Dtype};
/// let s = AttnShape { batch: 2, seq_len: 512, heads: 8, head_dim: 64, dtype: Dtype::F32 };
/// assert_eq!(s.activation_bytes(512), 16 * 8 * 64 * 64 * 4); // [2·512/64, 8, 64, 64] f32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// B.
    pub batch: usize,
    /// N.
    pub seq_len: usize,
    /// H.
    pub heads: usize,
    /// D.
    pub head_dim: usize,
    /// Element type of Q, K, V, O and their gradients.
    pub dtype: Dtype,
}

impl AttnShape {
    // Saturating: an absurd shape becomes a request the pool rejects, not an overflow.
    fn row_elems(&self, tokens: usize) -> usize {
        let windows = self.batch.saturating_mul(tokens).div_ceil(WINDOW);
        windows.saturating_mul(self.heads).saturating_mul(WINDOW)
    }

    /// Bytes of one `[⌈B·tokens/64⌉, H, 64, D]` activation of [`dtype`](Self::dtype)
    /// (saturating at `usize::MAX`).
    pub fn activation_bytes(&self, tokens: usize) -> usize {
        self.f32_activation_bytes(tokens) / 4 * self.dtype.bytes()
    }

    fn f32_activation_bytes(&self, tokens: usize) -> usize {
        self.row_elems(tokens)
            .saturating_mul(self.head_dim)
            .saturating_mul(4)
    }

    fn row_bytes(&self, tokens: usize) -> usize {
        self.row_elems(tokens).saturating_mul(4)
    }
}

/// The protocol's 40 shapes: N ∈ {512, …, 8192} × B ∈ {2, 4} × D ∈ {64, 128} × {f32, bf16}, H = 8.
///
/// ```
/// assert_eq!(muse_pool::trace::protocol_shapes().len(), 40);
/// ```
pub fn protocol_shapes() -> Vec<AttnShape> {
    let mut out = Vec::with_capacity(40);
    for seq_len in [512, 1024, 2048, 4096, 8192] {
        for batch in [2, 4] {
            for head_dim in [64, 128] {
                for dtype in [Dtype::F32, Dtype::Bf16] {
                    out.push(AttnShape {
                        batch,
                        seq_len,
                        heads: 8,
                        head_dim,
                        dtype,
                    });
                }
            }
        }
    }
    out
}

/// How many layers and steps per shape, and whether token counts vary per step.
///
/// ```
/// use muse_pool::trace::{attention_trace, protocol_shapes, TraceOptions};
/// let events = attention_trace(&protocol_shapes()[..1], TraceOptions { layers: 1, steps: 1, ragged_seed: None });
/// assert_eq!(events.len(), 2 * 15); // 15 buffers, each allocated and freed once
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceOptions {
    /// Attention layers per step (default 4).
    pub layers: usize,
    /// Training steps per shape (default 3).
    pub steps: usize,
    /// `Some(seed)`: each step uses `T ∈ [N/2, N]` tokens per sequence, drawn from `seed`
    /// (a ragged, packed batch); `None`: `T = N` (all sizes are then powers of two).
    pub ragged_seed: Option<u64>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            layers: 4,
            steps: 3,
            ragged_seed: None,
        }
    }
}

/// One event of a trace; ids are dense from 0 in the order of allocation.
///
/// ```
/// use muse_pool::trace::TraceEvent;
/// let e = TraceEvent::Alloc { id: 0, bytes: 4096, name: "q" };
/// assert!(matches!(e, TraceEvent::Alloc { bytes: 4096, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceEvent {
    /// Allocate `bytes` for buffer `id`.
    Alloc {
        /// Buffer id.
        id: usize,
        /// Requested bytes.
        bytes: usize,
        /// What the buffer holds (`"q"`, `"lse"`, `"dq_acc"`, …).
        name: &'static str,
    },
    /// Free buffer `id`.
    Free {
        /// Buffer id.
        id: usize,
    },
}

struct Gen {
    events: Vec<TraceEvent>,
    next: usize,
}

impl Gen {
    fn alloc(&mut self, name: &'static str, bytes: usize) -> usize {
        let id = self.next;
        self.next += 1;
        self.events.push(TraceEvent::Alloc { id, bytes, name });
        id
    }

    fn free(&mut self, ids: &[usize]) {
        self.events
            .extend(ids.iter().map(|&id| TraceEvent::Free { id }));
    }

    fn step(&mut self, s: &AttnShape, tokens: usize, layers: usize) {
        let (act, act32, row) = (
            s.activation_bytes(tokens),
            s.f32_activation_bytes(tokens),
            s.row_bytes(tokens),
        );
        let mut saved = Vec::with_capacity(layers);
        for _ in 0..layers {
            let (q, k, v) = (
                self.alloc("q", act),
                self.alloc("k", act),
                self.alloc("v", act),
            );
            let (qb, kb) = (self.alloc("q_ball", act), self.alloc("k_ball", act));
            let (o, lse) = (self.alloc("o", act), self.alloc("lse", row));
            self.free(&[kb, qb]);
            saved.push([lse, o, v, k, q]);
        }
        let mut grads = Vec::with_capacity(3 * layers);
        for layer in saved.iter().rev() {
            let (d_o, delta) = (self.alloc("d_o", act), self.alloc("delta", row));
            let (qb, kb) = (self.alloc("q_ball", act), self.alloc("k_ball", act));
            let acc = self.alloc("dq_acc", act32);
            let dq = [
                self.alloc("dq", act),
                self.alloc("dk", act),
                self.alloc("dv", act),
            ];
            self.free(&[acc, kb, qb, delta, d_o]);
            self.free(layer);
            grads.extend(dq);
        }
        grads.reverse();
        self.free(&grads);
    }
}

/// The trace over `shapes` in order, `opts.steps` steps each (see the module docs).
pub fn attention_trace(shapes: &[AttnShape], opts: TraceOptions) -> Vec<TraceEvent> {
    let mut g = Gen {
        events: Vec::new(),
        next: 0,
    };
    for (i, s) in shapes.iter().enumerate() {
        for step in 0..opts.steps {
            let tokens = match opts.ragged_seed {
                None => s.seq_len,
                Some(seed) => {
                    let r = splitmix64(seed ^ ((i as u64) << 32) ^ step as u64);
                    let half = s.seq_len / 2;
                    s.seq_len - half + (r % (half as u64 + 1)) as usize
                }
            };
            g.step(s, tokens, opts.layers);
        }
    }
    g.events
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a trace did to a pool.
///
/// ```
/// use muse_pool::{trace, HostAddressSpace, Pool};
/// let events = trace::attention_trace(&trace::protocol_shapes(), Default::default());
/// let report = trace::replay(&Pool::new(HostAddressSpace::new()), &events)?;
/// assert!(report.max_fragmentation < 0.2);
/// # Ok::<(), muse_pool::PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceReport {
    /// Events replayed.
    pub events: usize,
    /// Of which allocations.
    pub allocs: usize,
    /// Largest internal fragmentation over the states after each event.
    pub max_fragmentation: f64,
    /// Mean internal fragmentation over states with a live block, each state weighted by one
    /// event (time = event index).
    pub mean_fragmentation: f64,
    /// The original's metric (idle / reserved bytes), averaged the same way.
    pub mean_idle_fraction: f64,
    /// Pool counters over the replay.
    pub hits: u64,
    /// Misses over the replay.
    pub misses: u64,
    /// Slabs grown over the replay.
    pub slab_allocs: u64,
    /// The most live requested bytes.
    pub peak_live_requested_bytes: usize,
    /// The most live class bytes.
    pub peak_live_class_bytes: usize,
    /// The most reserved bytes.
    pub peak_reserved_bytes: usize,
}

/// Replays `events` on `pool`, measuring after each event; blocks still live at the end are
/// freed. Errors: a pool error, or an event naming a dead id (free) or a live one (alloc).
pub fn replay<S: SlabSource>(pool: &Pool<S>, events: &[TraceEvent]) -> Result<TraceReport> {
    let start = pool.stats();
    pool.reset_peak();
    let mut live: HashMap<usize, PoolBlock<'_, S>> = HashMap::new();
    let (mut allocs, mut states) = (0, 0usize);
    let (mut max_f, mut sum_f, mut sum_idle, mut peak_req) = (0.0f64, 0.0, 0.0, 0);
    for e in events {
        match *e {
            TraceEvent::Alloc { id, bytes, .. } => {
                if live.contains_key(&id) {
                    return Err(bad_id(id, "must not name a live buffer (alloc)"));
                }
                live.insert(id, pool.alloc(bytes)?);
                allocs += 1;
            }
            TraceEvent::Free { id } => {
                if live.remove(&id).is_none() {
                    return Err(bad_id(id, "must name a live buffer (free)"));
                }
            }
        }
        let s = pool.stats();
        peak_req = peak_req.max(s.live_requested_bytes);
        if s.live_blocks > 0 {
            let f = s.internal_fragmentation();
            max_f = max_f.max(f);
            sum_f += f;
            sum_idle += s.idle_fraction();
            states += 1;
        }
    }
    drop(live);
    let end = pool.stats();
    let mean = |x: f64| if states == 0 { 0.0 } else { x / states as f64 };
    Ok(TraceReport {
        events: events.len(),
        allocs,
        max_fragmentation: max_f,
        mean_fragmentation: mean(sum_f),
        mean_idle_fraction: mean(sum_idle),
        hits: end.hits - start.hits,
        misses: end.misses - start.misses,
        slab_allocs: end.slab_allocs - start.slab_allocs,
        peak_live_requested_bytes: peak_req,
        peak_live_class_bytes: end.peak_live_class_bytes,
        peak_reserved_bytes: end.peak_reserved_bytes,
    })
}

fn bad_id(id: usize, rule: &'static str) -> PoolError {
    PoolError::Invalid {
        op: "trace::replay",
        name: "id",
        rule,
        value: id as u64,
    }
}
