//! Running specs against the store: the spec file ([`spec`], [`expand`]), training a spec's runs with any
//! number of workers and processes ([`mod@run`], with a heartbeat thread, reporting through
//! [`progress::Progress`]), a shard of a sweep for a cluster ([`Shard`], defined in `core`; merging the
//! shards' stores is the store's `merge`), and re-running a stored run to compare it bit for bit
//! ([`verify`]).
//!
//! Imports `core` and `store`; must not import `report` or the binary's code (no terminal, no signals:
//! the caller hands in a [`progress::Progress`] and a stop flag).

pub mod expand;
mod heartbeat;
pub mod progress;
pub mod run;
pub mod spec;
pub mod verify;

pub use crate::core::shard::{Assignment, Shard};
pub use progress::{Lines, Progress, RunProgress, RunStart};
pub use run::{Options, RunReport, check_data, plan, run};
pub use spec::{Experiment, PlannedRun};
