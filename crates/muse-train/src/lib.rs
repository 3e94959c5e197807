//! Training and generation for the Phase 8 model (issue 9): GPT-2 BPE data ([`data`]), AdamW,
//! clipping and the schedule ([`optim`]), checkpoints that resume bit for bit ([`checkpoint`]),
//! the training loop ([`mod@train`]) and decoding ([`mod@generate`]). The gradients are the CPU
//! reference's exact backward (`muse_reference::model::grad`), in float64.

pub mod checkpoint;
pub mod data;
pub mod generate;
pub mod optim;
pub mod train;

pub use train::{train, LogLine, Summary, TrainOptions};
