//! mlp-runner: train multilayer perceptrons on MNIST with back-propagation and mini-batch SGD, as a
//! reproducible experiment pipeline.
//!
//! The path of one run: [`spec`] (TOML -> checked [`spec::RunConfig`]s) -> [`data`] (MNIST in memory as u8)
//! -> [`train`] (the epoch loop over [`loader`] batches and the [`model`]) -> [`store`] (SQLite). [`rng`]
//! gives every consumer of randomness its own ChaCha stream; [`kernel`] (with [`pool`] for threads) does
//! the f32 matrix products with bits fixed on every CPU; [`verify`] re-trains a stored run and
//! compares it bit for bit; [`envelope`] records what else the bits depend on.

pub mod bench;
pub mod cli;
pub mod data;
pub mod envelope;
pub mod error;
pub mod export;
pub mod kernel;
pub mod loader;
pub mod merge;
pub mod model;
pub mod plot;
pub mod pool;
pub mod progress;
pub mod report;
pub mod rng;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod table;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
