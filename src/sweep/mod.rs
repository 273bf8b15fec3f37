//! Running specs against the store: the spec file ([`spec`], [`expand`]), training a spec's runs with any
//! number of workers and processes ([`mod@run`], with a heartbeat thread, reporting through
//! [`progress::Progress`]), splitting a sweep
//! into shards for a cluster and merging their stores ([`shard`], [`merge`]), and re-running a stored run
//! to compare it bit for bit ([`verify`]).
//!
//! Imports `core` and `store`; must not import `report` or the binary's code (no terminal, no signals:
//! the caller hands in a [`progress::Progress`] and a stop flag).

pub mod expand;
mod heartbeat;
pub mod merge;
pub mod progress;
pub mod run;
pub mod shard;
pub mod spec;
pub mod verify;

pub use progress::{Lines, Progress, RunProgress, RunStart};
pub use run::{Options, RunReport, check_data, plan, run};
pub use shard::{Assignment, Shard};
pub use spec::{Experiment, PlannedRun};
