//! Core numerics: everything a run is made of, with no store, no sweep and no SQL.
//!
//! The path of one run: [`config`] (the checked [`config::RunConfig`]) -> [`data`] (MNIST in memory as u8)
//! -> [`train`] (the epoch loop over [`loader`] batches and the [`model`], run through a [`workspace`]).
//! [`rng`] gives every consumer of randomness its own ChaCha stream; [`kernel`] (with [`pool`] for
//! threads) does the matrix products (f32 and f64) with bits fixed by a written contract on every CPU;
//! [`envelope`] records what else the
//! bits depend on; [`mod@reference`] is the tutorial's per-sample algorithm the batched code is tested against;
//! [`mod@bench`] times all of it on this machine; [`search`] holds the schedules and the rung decisions of
//! adaptive search, as pure functions of stored metrics; [`shard`] which runs of a sweep a shard owns.
//!
//! Must not import `store`, `sweep` or `report`: a run is a pure function of its config and data, and is
//! trained, verified and benchmarked through the [`train::Observer`] it is given.

pub mod bench;
pub mod config;
pub mod confusion;
pub mod data;
pub mod early;
pub mod envelope;
pub mod kernel;
pub mod loader;
pub mod math;
pub mod model;
pub mod optim;
pub mod pool;
pub mod real;
pub mod reference;
pub mod rng;
pub mod search;
pub mod shard;
pub mod train;
pub mod workspace;
