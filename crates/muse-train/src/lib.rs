//! Training and generation for the Phase 8 model (issue 9): GPT-2 BPE data ([`data`]), AdamW,
//! clipping and the schedule ([`optim`]), checkpoints that resume bit for bit ([`checkpoint`]),
//! the training loop ([`mod@train`]) on the CPU or the GPU ([`engine`]) and decoding
//! ([`mod@generate`]), and held-out perplexity with a KV cache's codec ([`eval`]). The gradients are exact: the CPU reference's backward
//! (`muse_reference::model::grad`, float64) or the device's (`muse_cuda::model::train`, f32).

pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod eval;
pub mod generate;
pub mod optim;
pub mod scaler;
pub mod train;

pub use engine::Device;
pub use train::{train, LogLine, Summary, TrainOptions};
