//! The results store: one SQLite file holding experiments, runs, per-epoch metrics and weights.
//!
//! Owns the schema ([`schema`]: recognising a store before changing anything, migrations), a run's
//! lifecycle ([`status`]), the queue of runs to train ([`queue`]: claims with fencing tokens, heartbeats,
//! takeovers of dead owners; [`writes`]: each epoch written in one fenced transaction), the owner identity that tells a live
//! owner from a dead one ([`owner`]), reads with bound parameters that check every stored bit against its
//! hash ([`read`], [`integrity`]), run management ([`manage`]: names, tags, notes, soft deletes, gc), and
//! adaptive searches ([`search`]: rungs decided inside the transactions that complete them).
//!
//! WAL mode, foreign keys on, a busy timeout for concurrent readers and writers. Imports `core` only; must
//! not import `sweep`, `report` or the binary's code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

pub mod compare;
pub mod dashboard;
pub mod integrity;
pub mod listing;
pub mod manage;
pub mod merge;
pub mod owner;
pub mod queue;
pub mod read;
pub mod schema;
pub mod search;
pub mod status;
pub mod synthetic;
pub mod writes;

pub use integrity::{Finding, RunCheck};
pub use owner::Owner;
pub use queue::Queued;
pub(crate) use queue::{Claim, NewExperiment, NewRun};
pub use read::{RunRow, RunSummary, Table};
pub use schema::SCHEMA_VERSION;
pub use status::RunStatus;

/// How long a statement waits for a lock another process holds before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which stored weights: the run's initial parameters, its final ones, or the checkpoint of its last
/// stored epoch (an unfinished run only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    Initial,
    Final,
    Checkpoint,
}

impl WeightsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsKind::Initial => "initial",
            WeightsKind::Final => "final",
            WeightsKind::Checkpoint => "checkpoint",
        }
    }

    pub fn parse(s: &str) -> Option<WeightsKind> {
        [
            WeightsKind::Initial,
            WeightsKind::Final,
            WeightsKind::Checkpoint,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The `runs` column holding the hash of these weights.
    pub(crate) fn hash_column(self) -> &'static str {
        match self {
            WeightsKind::Initial => "init_weights_sha256",
            WeightsKind::Final => "weights_sha256",
            WeightsKind::Checkpoint => "checkpoint_sha256",
        }
    }
}

/// An open results store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The schema version of the file (older versions are only read, never migrated, when read-only).
    version: i64,
}

impl Store {
    /// Open (creating it and its folder if needed) the store at `path` for reading and writing. A file
    /// that is not a store is refused before anything in it changes; an older store is migrated.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |msg: String| Error::Store {
            path: path.to_path_buf(),
            msg,
        };
        check_path(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                err(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| {
            err(format!(
                "cannot open or create it ({e}); choose a --db path in a writable folder"
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(format!("cannot configure: {e}")))?;
        // Recognise the file before anything writes to it (journal mode, schema): a refused file stays untouched.
        let found = schema::recognise(&conn, path)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            version: 0,
        };
        store.configure(false)?;
        store.version = match found {
            schema::Recognised::Empty => 0,
            schema::Recognised::Store(v) => v,
        };
        if store.version < SCHEMA_VERSION {
            store.migrate()?;
        }
        Ok(store)
    }

    /// Open an existing store read-only (for `sql`, `ls`, `show`, `verify`, `check`, merge's sources):
    /// nothing can be changed through it, and an older schema is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let err = |msg: String| Error::Store {
            path: path.to_path_buf(),
            msg,
        };
        check_path(path)?;
        if !path.exists() {
            return Err(err(
                "does not exist; train a spec first (runner experiments/smoke.toml) or pass --db"
                    .into(),
            ));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(format!("cannot open: {e}")))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(format!("cannot configure: {e}")))?;
        let version = match schema::recognise(&conn, path)? {
            schema::Recognised::Empty => return Err(err("is empty: no runs stored yet".into())),
            schema::Recognised::Store(v) => v,
        };
        let store = Store {
            conn,
            path: path.to_path_buf(),
            version,
        };
        store.configure(true)?;
        Ok(store)
    }

    /// [`Store::open_read_only`], but `Ok(None)` for a file that exists and is still empty: a store a
    /// sweep starting meanwhile has not created its tables in yet (the dashboard waits for it).
    pub fn open_read_only_or_empty(path: &Path) -> Result<Option<Store>> {
        if path.exists() {
            let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
                || Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .ok()
                .and_then(|c| {
                    c.busy_timeout(BUSY_TIMEOUT).ok()?;
                    schema::recognise(&c, path).ok()
                })
                .is_some_and(|r| r == schema::Recognised::Empty);
            if empty {
                return Ok(None);
            }
        }
        Store::open_read_only(path).map(Some)
    }

    /// Close the store, reporting an error that closing finds (e.g. a last WAL checkpoint that fails).
    pub fn close(self) -> Result<()> {
        let path = self.path;
        self.conn
            .close()
            .map_err(|(_, e)| Error::from(e).on_file(&path))
    }

    /// The underlying connection, for whole-database reads such as `merge`'s.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the file.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Name this store's file on an SQLite error.
    pub(crate) fn at<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| e.on_file(&self.path))
    }

    pub(crate) fn store_err(&self, msg: impl Into<String>) -> Error {
        Error::Store {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    pub(crate) fn corrupt(&self, msg: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// The views use `sqrt`, which SQLite has only when built with its math functions (the stock shell
    /// and this crate's build via .cargo/config.toml are); a build without them gets it defined here.
    fn ensure_sqrt(&self) -> Result<()> {
        if self
            .conn
            .query_row("SELECT sqrt(4.0)", [], |r| r.get::<_, f64>(0))
            .is_err()
        {
            self.conn.create_scalar_function(
                "sqrt",
                1,
                rusqlite::functions::FunctionFlags::SQLITE_UTF8
                    | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
                |ctx| Ok(ctx.get::<Option<f64>>(0)?.map(f64::sqrt)),
            )?;
        }
        Ok(())
    }

    fn configure(&self, read_only: bool) -> Result<()> {
        let setup = if read_only {
            "PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
        };
        // Switching a new file to WAL needs the exclusive lock; SQLite answers SQLITE_BUSY at once (no busy
        // handler) when another process opening the same new file holds a shared lock meanwhile, so that
        // step is retried for as long as the busy timeout would have waited.
        let start = std::time::Instant::now();
        let mut result = self.conn.execute_batch(setup);
        while let Err(rusqlite::Error::SqliteFailure(f, _)) = &result {
            if f.code != rusqlite::ErrorCode::DatabaseBusy || start.elapsed() > BUSY_TIMEOUT {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            result = self.conn.execute_batch(setup);
        }
        result.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("not a database") {
                self.store_err(
                    "is not a SQLite database (another kind of file?); pass another --db path",
                )
            } else if msg.contains("readonly") || msg.contains("read-only") {
                self.store_err(format!(
                    "cannot write here ({msg}); choose a writable --db path"
                ))
            } else {
                self.store_err(format!("cannot use: {msg}"))
            }
        })?;
        self.ensure_sqrt()
    }

    /// Create the schema in a new file or migrate an older one. The version is read again under the write
    /// lock, so that two processes opening a new file at once create it once.
    fn migrate(&mut self) -> Result<()> {
        let tx = self.write_tx()?;
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now < SCHEMA_VERSION {
            schema::migrate(&tx, now)?;
        }
        tx.commit()?;
        self.version = SCHEMA_VERSION;
        Ok(())
    }

    /// A write transaction that takes the write lock at once (waiting up to the busy timeout), so that it
    /// never fails half-way on a lock another process holds.
    pub(crate) fn write_tx(&self) -> Result<Transaction<'_>> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| Error::from(e).on_file(&self.path))
    }

    /// A column added in schema version `since`, or `NULL` when this (read-only, older) file lacks it.
    pub(crate) fn col(&self, name: &'static str, since: i64) -> &'static str {
        if self.version >= since { name } else { "NULL" }
    }

    /// [`Store::col`] qualified by a table alias: `r.deleted_at`, or `NULL`.
    pub(crate) fn col_of(&self, alias: &str, name: &'static str, since: i64) -> String {
        if self.version >= since {
            format!("{alias}.{name}")
        } else {
            "NULL".into()
        }
    }
}

impl Store {
    /// The relation of runs to the experiments they belong to, as a table expression with the columns
    /// `experiment` (a name), `run_id`, `name` (the run's name in that experiment) and `overrides` (the
    /// values that experiment's sweep set): the `members` table,
    /// or for a store older than version 5 (read as it is) each run in the experiment that queued it.
    pub(crate) fn members(&self) -> &'static str {
        if self.version >= 5 {
            "members"
        } else {
            "(SELECT e.name AS experiment, r.id AS run_id, r.name AS name, r.overrides AS overrides
              FROM runs r JOIN experiments e ON e.id = r.experiment_id)"
        }
    }

    /// The condition that run `alias` is current: not deleted (`runner rm`) and not superseded by a later
    /// attempt of its config (`--force`). What every view, statistic and "best" counts.
    pub(crate) fn current(&self, alias: &str) -> String {
        format!(
            "{} IS NULL AND {} IS NULL",
            self.col_of(alias, "deleted_at", 3),
            self.col_of(alias, "superseded_by", 5)
        )
    }

    /// How an experiment's best is chosen: the metric stored with its latest invocation; for a store
    /// older than version 5, a search's metric, else `val_acc` when every run has a validation split,
    /// else `test_acc`.
    pub fn selection_metric(&self, experiment: &str) -> Result<crate::core::search::Metric> {
        use crate::core::search::Metric;
        let stored: Option<String> = if self.version >= 5 {
            self.at(self
                .conn
                .query_row(
                    "SELECT metric FROM experiments WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                    [experiment],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::from))?
                .flatten()
        } else {
            None
        };
        if let Some(m) = stored.as_deref().and_then(Metric::parse) {
            return Ok(m);
        }
        if self.version >= 4 {
            let search: Option<String> = self.at(self
                .conn
                .query_row(
                    "SELECT metric FROM searches WHERE experiment = ?1 ORDER BY created_at DESC LIMIT 1",
                    [experiment],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::from))?;
            if let Some(m) = search.as_deref().and_then(Metric::parse) {
                return Ok(m);
            }
            let unvalidated: bool = self.at(self
                .conn
                .query_row(
                    &format!(
                        "SELECT NOT EXISTS (SELECT 1 FROM {} m JOIN runs r ON r.id = m.run_id
                         WHERE m.experiment = ?1) OR EXISTS (SELECT 1 FROM {} m JOIN runs r
                         ON r.id = m.run_id WHERE m.experiment = ?1 AND r.validation IS NULL)",
                        self.members(),
                        self.members()
                    ),
                    [experiment],
                    |r| r.get(0),
                )
                .map_err(Error::from))?;
            if !unvalidated {
                return Ok(Metric::ValAcc);
            }
        }
        Ok(Metric::TestAcc)
    }
}

/// Refuse a path that cannot be a database file before SQLite sees it: a folder, or an existing file that
/// is not a regular file (a device such as /dev/null, a pipe, a socket), where SQLite would create its
/// journal and WAL files beside it.
fn check_path(path: &Path) -> Result<()> {
    let err = |msg: &str| Error::Store {
        path: path.to_path_buf(),
        msg: msg.into(),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(err(
            "is a directory; pass the path of a database file, e.g. results/results.db",
        )),
        Ok(m) if !m.is_file() => Err(err(
            "is not a regular file (a device, a pipe or a socket); pass the path of a database file",
        )),
        _ => Ok(()),
    }
}

/// The current time as RFC 3339 UTC with microseconds. Microseconds: `merge` tells invocations apart by
/// their experiment's creation time, and shards of a job array start within the same millisecond.
pub(crate) fn now() -> String {
    crate::text::iso_time(unix_now())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes that open a new store at the same moment (three runners started together on one
    /// `--db`) each get it, created once: none fails on the lock the one converting it to WAL holds.
    #[test]
    fn many_openers_of_a_new_store_all_get_it() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..40 {
            let path = dir.path().join(format!("s{round}.db"));
            let start = std::sync::Barrier::new(6);
            let results: Vec<Result<i64>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            Store::open(&path).map(|st| st.version())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in results {
                match r {
                    Ok(v) => assert_eq!(v, SCHEMA_VERSION),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
        }
    }
}
