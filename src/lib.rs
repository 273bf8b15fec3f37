//! mlp-runner: train multilayer perceptrons on MNIST with back-propagation and mini-batch SGD, as a
//! reproducible experiment pipeline.
//!
//! The layers, each a folder whose module doc says what it owns and what it must not import; no module
//! imports from a layer above its own:
//!
//! - [`core`]: a run as a pure function of its config and data: config types, MNIST readers, the model,
//!   the matrix kernels (the chain contract, and the lanes one that older runs verify with, in f32 and
//!   f64), the training loop, search schedules, shards. No SQL.
//! - [`store`]: the SQLite results store and every SQL statement of the tool: schema and migrations,
//!   experiments and their members, the run queue (claims, fencing, heartbeats, takeovers), reads that
//!   check every stored bit against its hash, merging stores, the queries of compare, ls and the
//!   dashboard.
//! - [`sweep`]: specs and their expansion, training a spec's runs into a store, verify.
//! - [`report`]: compare's statistics, plots, safetensors export, predictions, tables, the dashboard.
//!
//! Below them all: [`error`] (typed errors and their kinds), [`text`] (hex, suggestions, safe rendering
//! of untrusted text) and [`files`] (output files that never replace the store and never appear half
//! written). The `runner` binary (`src/main.rs`, `src/cli/`) parses the command line, draws progress and
//! handles signals; this library has none of that and can be used from another program:
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//!
//! use mlp_runner::core::config::RunConfig;
//! use mlp_runner::store::Store;
//! use mlp_runner::sweep::{self, Experiment};
//!
//! // 1 000 training and 500 test images of the shipped MNIST, a small net, two epochs.
//! let mut config = RunConfig::default();
//! config.data.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist").into();
//! config.data.limit_train = Some(1000);
//! config.data.limit_test = Some(500);
//! config.model.sizes = vec![784, 32, 10];
//! config.train.epochs = 2;
//! let experiment = Experiment::single("doc", config)?;
//!
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("results.db");
//! let stop = AtomicBool::new(false);
//! let reports = sweep::run(&experiment, &db, &sweep::Options::default(), &sweep::Lines, &stop)?;
//!
//! let store = Store::open_read_only(&db)?;
//! let epochs = store.epochs(reports[0].run_id)?;
//! assert_eq!(epochs.len(), 2);
//! assert!(epochs[1].test_acc > 0.8, "{:?}", epochs[1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod core;
pub mod error;
pub mod files;
pub mod report;
pub mod store;
pub mod sweep;
pub mod text;

pub use error::{Error, ErrorKind, Result};
