//! The results store: one SQLite file holding experiments, runs, per-epoch metrics and weights.
//!
//! The schema is the product's public interface (documented in the README); [`SCHEMA_VERSION`] is kept in
//! `PRAGMA user_version` and checked on open. WAL mode, foreign keys on, a busy timeout for concurrent
//! readers and writers. Every write is one short transaction: a run is never half-written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::envelope::{Envelope, hostname};
use crate::error::{Error, Result};
use crate::model::{Snapshot, Tensor};
use crate::rng::StreamState;
use crate::spec::{Dtype, Experiment, PlannedRun, RunConfig};
use crate::train::{Checkpoint, EpochMetrics};

/// Bump when the schema changes; older files are migrated, newer ones refused.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    spec_path   TEXT NOT NULL,
    spec_toml   TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    experiment_id   INTEGER NOT NULL REFERENCES experiments(id),
    name            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                        ('pending', 'running', 'completed', 'diverged', 'failed', 'interrupted')),
    -- resolved parameters
    seed            INTEGER NOT NULL,
    sizes           TEXT NOT NULL,      -- JSON array, e.g. [784,512,10]
    activation      TEXT NOT NULL,
    init            TEXT NOT NULL,
    dtype           TEXT NOT NULL,
    batch_size      INTEGER NOT NULL,
    learning_rate   REAL NOT NULL,
    epochs          INTEGER NOT NULL,
    drop_last       INTEGER NOT NULL,
    data_dir        TEXT NOT NULL,
    data_format     TEXT NOT NULL,
    limit_train     INTEGER,
    limit_test      INTEGER,
    overrides       TEXT NOT NULL,      -- JSON object: the values the sweep set for this run
    config_toml     TEXT NOT NULL,      -- the resolved run config; `verify` re-trains from it
    config_hash     TEXT NOT NULL,      -- SHA-256 of the resolved config
    seed_group      TEXT NOT NULL,      -- SHA-256 of the config with the seed left out: runs that differ only by seed
    -- results
    epochs_done     INTEGER NOT NULL DEFAULT 0,
    train_loss      REAL,
    train_acc       REAL,
    test_loss       REAL,
    test_acc        REAL,
    diverged_epoch  INTEGER,
    error           TEXT,
    dataset_sha256  TEXT,
    init_weights_sha256 TEXT,
    weights_sha256  TEXT,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    seconds         REAL,
    -- determinism envelope, of the process that trains the run (NULL while it is pending)
    crate_version   TEXT,
    git_commit      TEXT,
    git_dirty       INTEGER,
    rustc_version   TEXT,
    cargo_lock_sha256 TEXT,
    cpu_model       TEXT,
    cpu_features    TEXT,
    gemm_kernel     TEXT,
    threads         INTEGER,
    os              TEXT,
    host            TEXT,
    pid             INTEGER,            -- the owner: the process training (or last training) the run
    heartbeat_at    REAL,               -- unix seconds of the owner's last sign of life
    -- resume state: the checkpoint of the last stored epoch (weights kind 'checkpoint')
    checkpoint_epoch INTEGER,
    checkpoint_rng  TEXT,               -- the shuffle stream after it: "seed:stream:word_pos"
    resumes         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_config ON runs(config_hash);
CREATE INDEX runs_by_experiment ON runs(experiment_id);

CREATE TABLE epochs (
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,     -- 1-based
    train_loss    REAL,                 -- mean cross-entropy over the training set after the epoch (NULL: NaN)
    train_acc     REAL NOT NULL,
    test_loss     REAL,
    test_acc      REAL NOT NULL,
    seconds       REAL NOT NULL,        -- wall time of the epoch, evaluation included
    train_seconds REAL NOT NULL,        -- wall time of the SGD steps alone
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE weights (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('initial', 'final', 'checkpoint')),
    epoch   INTEGER NOT NULL,           -- 0 for the initial weights; a checkpoint's epoch
    layer   INTEGER NOT NULL,           -- 1-based layer l
    param   TEXT NOT NULL CHECK (param IN ('weight', 'bias')),
    shape   TEXT NOT NULL,              -- JSON array: [out, in] for a weight, [out] for a bias
    dtype   TEXT NOT NULL,              -- f32 or f64
    data    BLOB NOT NULL,              -- little-endian values, row-major
    PRIMARY KEY (run_id, kind, layer, param)
);

CREATE VIEW run_summary AS
SELECT r.id AS run_id, e.name AS experiment, r.name, r.status, r.seed, r.sizes, r.activation, r.init,
       r.dtype, r.batch_size, r.learning_rate, r.epochs, r.epochs_done, r.train_loss, r.train_acc,
       r.test_loss, r.test_acc, r.seconds, r.finished_at
FROM runs r JOIN experiments e ON e.id = r.experiment_id;

CREATE VIEW best_runs AS
SELECT * FROM (
    SELECT s.*, ROW_NUMBER() OVER (PARTITION BY experiment ORDER BY test_acc DESC, run_id) AS rank
    FROM run_summary s WHERE status = 'completed'
) WHERE rank = 1;

CREATE VIEW seed_stats AS
SELECT e.name AS experiment, r.sizes, r.activation, r.init, r.dtype, r.batch_size, r.learning_rate,
       r.epochs, COUNT(*) AS seeds,
       AVG(r.test_acc) AS mean_test_acc,
       CASE WHEN COUNT(*) > 1 THEN
           sqrt(max(0.0, (SUM(r.test_acc * r.test_acc) - COUNT(*) * AVG(r.test_acc) * AVG(r.test_acc))
                         / (COUNT(*) - 1)))
       END AS std_test_acc,
       MIN(r.test_acc) AS min_test_acc, MAX(r.test_acc) AS max_test_acc,
       AVG(r.test_loss) AS mean_test_loss, AVG(r.seconds) AS mean_seconds
FROM runs r JOIN experiments e ON e.id = r.experiment_id
WHERE r.status = 'completed'
GROUP BY e.name, r.seed_group;
"#;

/// A run's row, as far as the tool itself needs it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub experiment_id: i64,
    pub experiment: String,
    pub name: String,
    pub status: String,
    pub config_toml: String,
    pub config_hash: String,
    pub epochs_done: i64,
    pub test_acc: Option<f64>,
    pub dataset_sha256: Option<String>,
    pub weights_sha256: Option<String>,
    pub init_weights_sha256: Option<String>,
    pub envelope: Vec<(String, String)>,
}

/// Where a planned run stands after [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// Completed or diverged already.
    Done { id: i64, status: String },
    /// To be trained (`pending`), resumed (`interrupted`), or being trained (`running`); `new` if this
    /// call inserted it.
    Queued { id: i64, status: String, new: bool },
}

/// A run this process now owns, with the checkpoint to resume from if it has one.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: i64,
    pub config_hash: String,
    pub checkpoint: Option<Checkpoint>,
}

/// A run's status and final metrics.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub seconds: Option<f64>,
}

/// An earlier run of the same config: who owns it and how it stands.
#[derive(Debug, Clone)]
pub struct PreviousRun {
    pub id: i64,
    pub status: String,
    pub pid: Option<i64>,
    pub host: String,
}

/// The result of a read-only query: column names and rows.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now() -> String {
    // RFC 3339 UTC, computed without a date library: days since the epoch to a civil date.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let days = (secs / 86400.0).floor() as i64;
    let rem = secs - days as f64 * 86400.0;
    let (h, m, s) = (
        (rem / 3600.0) as i64,
        ((rem % 3600.0) / 60.0) as i64,
        rem % 60.0,
    );
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    // Microseconds: `merge` tells invocations apart by their experiment's creation time, and shards of a
    // job array start within the same millisecond.
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:09.6}Z")
}

impl Store {
    /// Open (creating it and its folder if needed) the database at `path` for reading and writing.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |msg: String| Error::Store {
            path: path.to_path_buf(),
            msg,
        };
        if path.is_dir() {
            return Err(err(
                "is a directory; pass the path of a database file, e.g. results/results.db".into(),
            ));
        }
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
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        // Check the version before anything writes (journal mode, schema): a refused file stays untouched.
        let version = store.user_version()?;
        store.check_version(version, false)?;
        store.configure(false)?;
        store.migrate(version)?;
        Ok(store)
    }

    /// Open an existing database read-only (for `sql`, `ls`, `show`, `verify`): nothing can be changed through it.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let err = |msg: String| Error::Store {
            path: path.to_path_buf(),
            msg,
        };
        if path.is_dir() {
            return Err(err(
                "is a directory; pass the path of a database file, e.g. results/results.db".into(),
            ));
        }
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
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure(true)?;
        let version = store.user_version()?;
        store.check_version(version, true)?;
        Ok(store)
    }

    /// The underlying connection, for whole-database operations such as `merge`.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn store_err(&self, msg: impl Into<String>) -> Error {
        Error::Store {
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
        self.conn
            .busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.store_err(format!("cannot configure: {e}")))?;
        let setup = if read_only {
            "PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
        };
        self.conn.execute_batch(setup).map_err(|e| {
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

    fn user_version(&self) -> Result<i64> {
        self.conn
            .busy_timeout(Duration::from_secs(30))
            .map_err(|e| self.store_err(format!("cannot configure: {e}")))?;
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| {
                if e.to_string().contains("not a database") {
                    self.store_err(
                        "is not a SQLite database (another kind of file?); pass another --db path",
                    )
                } else {
                    self.store_err(format!("cannot read the schema version: {e}"))
                }
            })
    }

    fn check_version(&self, version: i64, read_only: bool) -> Result<()> {
        if version > SCHEMA_VERSION {
            return Err(self.store_err(format!(
                "was written by a newer mlp-runner (schema version {version}; this build knows {SCHEMA_VERSION}); \
                 upgrade runner or use another --db"
            )));
        }
        if version == 0 {
            let tables: i64 = self.conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )?;
            if tables > 0 {
                return Err(self.store_err(
                    "is a SQLite database of another program (no mlp-runner schema version); pass another --db",
                ));
            }
            if read_only {
                return Err(self.store_err("is empty: no runs stored yet"));
            }
        }
        Ok(())
    }

    /// Create the schema in a new file. The version is read again under the write lock, so that two
    /// processes opening a new file at once create it once.
    fn migrate(&self, version: i64) -> Result<()> {
        if version == 0 {
            let tx = self.write_tx()?;
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now == 0 {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            tx.commit()?;
        }
        Ok(())
    }

    /// A write transaction that takes the write lock at once (waiting up to the busy timeout), so that it
    /// never fails half-way on a lock another process holds.
    fn write_tx(&self) -> Result<Transaction<'_>> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    /// The newest run with this config hash, if any.
    pub fn latest_with_config(&self, config_hash: &str) -> Result<Option<PreviousRun>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, status, pid, coalesce(host, '') FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1",
                [config_hash],
                |r| Ok(PreviousRun { id: r.get(0)?, status: r.get(1)?, pid: r.get(2)?, host: r.get(3)? }),
            )
            .optional()?)
    }

    /// Queue the runs of `exp` in one transaction and say where each stands. A run with no row yet (or,
    /// with `force`, whose latest row is done) gets a new `pending` row, under a new experiment row; a
    /// `failed` run is reset to `pending`; `pending`, `running` and `interrupted` rows stay as they are
    /// (claimed, resumed or left to their live owner later); `completed` and `diverged` ones are done.
    pub fn enqueue(&self, exp: &Experiment, force: bool) -> Result<Vec<Queued>> {
        let tx = self.write_tx()?;
        let mut experiment_id = None;
        let mut out = Vec::with_capacity(exp.runs.len());
        for run in &exp.runs {
            let hash = run.config.hash();
            let prev: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, status FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let queued = match prev {
                Some((id, status)) if status == "completed" || status == "diverged" => {
                    if force {
                        None
                    } else {
                        Some(Queued::Done { id, status })
                    }
                }
                Some((id, status)) if status == "failed" => {
                    reset_run(&tx, id)?;
                    Some(Queued::Queued {
                        id,
                        status: "pending".into(),
                        new: false,
                    })
                }
                Some((id, status)) => Some(Queued::Queued {
                    id,
                    status,
                    new: false,
                }),
                None => None,
            };
            let queued = match queued {
                Some(q) => q,
                None => {
                    let eid = match experiment_id {
                        Some(e) => e,
                        None => {
                            tx.execute(
                                "INSERT INTO experiments (name, description, spec_path, spec_toml, created_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![exp.name, exp.description, exp.path, exp.text, now()],
                            )?;
                            *experiment_id.insert(tx.last_insert_rowid())
                        }
                    };
                    let id = insert_pending(&tx, eid, run)?;
                    Queued::Queued {
                        id,
                        status: "pending".into(),
                        new: true,
                    }
                }
            };
            out.push(queued);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Take the next run of `config_hashes` that needs training: `pending`, `interrupted`, or `running` with
    /// an owner that is gone (a dead pid on this host, or no heartbeat for `stale_after`). One transaction:
    /// two processes never claim the same run. The claimer becomes the owner and its envelope, `env` of the
    /// run's config hash, is recorded.
    pub fn claim(
        &self,
        config_hashes: &[String],
        env: &dyn Fn(&str) -> Envelope,
        stale_after: Duration,
    ) -> Result<Option<Claim>> {
        let hashes = serde_json::to_string(config_hashes).unwrap_or_default();
        let tx = self.write_tx()?;
        // Runs whose owner is gone become `interrupted`.
        let running: Vec<(i64, Option<i64>, String, Option<f64>)> = tx
            .prepare(
                "SELECT id, pid, coalesce(host, ''), heartbeat_at FROM runs
                 WHERE status = 'running' AND config_hash IN (SELECT value FROM json_each(?1))",
            )?
            .query_map([&hashes], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let now_s = unix_now();
        for (id, pid, host, beat) in running {
            let stale = beat.is_none_or(|b| now_s - b > stale_after.as_secs_f64());
            if stale || !owner_alive(pid, &host) {
                tx.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?1", [id])?;
            }
        }
        let next: Option<(i64, String, Option<i64>, Option<String>)> = tx
            .query_row(
                "SELECT id, config_hash, checkpoint_epoch, checkpoint_rng FROM runs
                 WHERE status IN ('pending', 'interrupted') AND config_hash IN (SELECT value FROM json_each(?1))
                 ORDER BY id LIMIT 1",
                [&hashes],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, config_hash, checkpoint_epoch, checkpoint_rng)) = next else {
            tx.commit()?;
            return Ok(None);
        };
        let env = env(&config_hash);
        let resume = checkpoint_epoch.is_some();
        tx.execute(
            "UPDATE runs SET status = 'running', pid = ?2, host = ?3, heartbeat_at = ?4, resumes = resumes + ?5,
                crate_version = ?6, git_commit = ?7, git_dirty = ?8, rustc_version = ?9, cargo_lock_sha256 = ?10,
                cpu_model = ?11, cpu_features = ?12, gemm_kernel = ?13, threads = ?14, os = ?15
             WHERE id = ?1",
            params![
                id,
                std::process::id(),
                env.host,
                now_s,
                i64::from(resume),
                env.crate_version,
                env.git_commit,
                env.git_dirty,
                env.rustc_version,
                env.cargo_lock_sha256,
                env.cpu_model,
                env.cpu_features,
                env.gemm_kernel,
                env.threads as i64,
                env.os,
            ],
        )?;
        tx.commit()?;
        let checkpoint = match (checkpoint_epoch, checkpoint_rng) {
            (Some(epoch), Some(rng)) => {
                let params = self.weights(id, "checkpoint")?;
                let shuffle = parse_stream_state(&rng);
                match (params, shuffle) {
                    (Some(params), Some(shuffle)) => Some(Checkpoint {
                        epoch: epoch as usize,
                        params,
                        shuffle,
                    }),
                    _ => {
                        return Err(self.store_err(format!(
                            "run {id}: its checkpoint of epoch {epoch} is incomplete; re-train it with --force"
                        )));
                    }
                }
            }
            _ => None,
        };
        Ok(Some(Claim {
            id,
            config_hash,
            checkpoint,
        }))
    }

    /// The latest row with this config hash, summarised for a report.
    pub fn latest_summary(&self, config_hash: &str) -> Result<Option<RunSummary>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, status, test_acc, test_loss, seconds FROM runs WHERE config_hash = ?1
                 ORDER BY id DESC LIMIT 1",
                [config_hash],
                |r| {
                    Ok(RunSummary {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        status: r.get(2)?,
                        test_acc: r.get(3)?,
                        test_loss: r.get(4)?,
                        seconds: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Tell other processes that the owner of `run_id` is alive.
    pub fn heartbeat(&self, run_id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
            params![run_id, unix_now()],
        )?;
        Ok(())
    }

    /// Mark a run `running` and store its initial weights, in one transaction.
    pub fn start_run(&self, run_id: i64, dataset_sha256: &str, initial: &Snapshot) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "UPDATE runs SET started_at = ?2, dataset_sha256 = ?3, init_weights_sha256 = ?4 WHERE id = ?1",
            params![run_id, now(), dataset_sha256, initial.sha256()],
        )?;
        insert_weights(&tx, run_id, "initial", 0, initial)?;
        tx.commit()?;
        Ok(())
    }

    /// Store one epoch with its checkpoint (parameters and shuffle-stream state, to resume from). When
    /// `finish` is given the run ends in the same transaction: its status and final weights are written with
    /// the epoch's row, and the checkpoint, now redundant, is dropped.
    pub fn record_epoch(
        &self,
        run_id: i64,
        m: &EpochMetrics,
        checkpoint: &Checkpoint,
        finish: Option<&str>,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![run_id, m.epoch as i64, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds, m.train_seconds],
        )?;
        tx.execute(
            "UPDATE runs SET epochs_done = ?2, train_loss = ?3, train_acc = ?4, test_loss = ?5, test_acc = ?6,
                seconds = (SELECT SUM(seconds) FROM epochs WHERE run_id = ?1) WHERE id = ?1",
            params![run_id, m.epoch as i64, m.train_loss, m.train_acc, m.test_loss, m.test_acc],
        )?;
        let params = &checkpoint.params;
        if let Some(status) = finish {
            insert_weights(&tx, run_id, "final", m.epoch, params)?;
            tx.execute(
                "DELETE FROM weights WHERE run_id = ?1 AND kind = 'checkpoint'",
                [run_id],
            )?;
            let diverged_epoch = (status == "diverged").then_some(m.epoch as i64);
            tx.execute(
                "UPDATE runs SET status = ?2, weights_sha256 = ?3, diverged_epoch = ?4, finished_at = ?5,
                    checkpoint_epoch = NULL, checkpoint_rng = NULL WHERE id = ?1",
                params![run_id, status, params.sha256(), diverged_epoch, now()],
            )?;
        } else {
            insert_weights(&tx, run_id, "checkpoint", m.epoch, params)?;
            let s = checkpoint.shuffle;
            tx.execute(
                "UPDATE runs SET checkpoint_epoch = ?2, checkpoint_rng = ?3, heartbeat_at = ?4 WHERE id = ?1",
                params![run_id, m.epoch as i64, format!("{}:{}:{}", s.seed, s.stream, s.word_pos), unix_now()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// End a run that did not finish training: `failed` (with the error) or `interrupted`.
    pub fn end_run(&self, run_id: i64, status: &str, error: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![run_id, status, error, now()],
        )?;
        Ok(())
    }

    pub fn run(&self, id: i64) -> Result<RunRow> {
        let env_cols = [
            "crate_version",
            "git_commit",
            "git_dirty",
            "rustc_version",
            "cargo_lock_sha256",
            "gemm_kernel",
            "cpu_model",
            "threads",
            "os",
        ];
        let sql = format!(
            "SELECT r.id, r.experiment_id, e.name, r.name, r.status, r.config_toml, r.config_hash, r.epochs_done,
                r.test_acc, r.dataset_sha256, r.weights_sha256, r.init_weights_sha256, {}
             FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?1",
            env_cols.iter().map(|c| format!("CAST(r.{c} AS TEXT)")).collect::<Vec<_>>().join(", ")
        );
        self.conn
            .query_row(&sql, [id], |r| {
                let mut envelope = Vec::new();
                for (i, c) in env_cols.iter().enumerate() {
                    envelope.push((
                        c.to_string(),
                        r.get::<_, Option<String>>(12 + i)?.unwrap_or_default(),
                    ));
                }
                Ok(RunRow {
                    id: r.get(0)?,
                    experiment_id: r.get(1)?,
                    experiment: r.get(2)?,
                    name: r.get(3)?,
                    status: r.get(4)?,
                    config_toml: r.get(5)?,
                    config_hash: r.get(6)?,
                    epochs_done: r.get(7)?,
                    test_acc: r.get(8)?,
                    dataset_sha256: r.get(9)?,
                    weights_sha256: r.get(10)?,
                    init_weights_sha256: r.get(11)?,
                    envelope,
                })
            })
            .optional()?
            .ok_or_else(|| {
                let max: Option<i64> = self
                    .conn
                    .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
                    .ok()
                    .flatten();
                Error::Usage(match max {
                    Some(m) => format!(
                        "no run with id {id} in {} (run ids go from 1 to {m}; see `runner ls`)",
                        self.path.display()
                    ),
                    None => format!(
                        "no run with id {id}: {} holds no runs yet",
                        self.path.display()
                    ),
                })
            })
    }

    /// Run ids, optionally of one experiment name only, oldest first.
    pub fn run_ids(&self, experiment: Option<&str>, statuses: &[&str]) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.status FROM runs r JOIN experiments e ON e.id = r.experiment_id
             WHERE (?1 IS NULL OR e.name = ?1) ORDER BY r.id",
        )?;
        let rows = stmt.query_map([experiment], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut ids = Vec::new();
        for row in rows {
            let (id, status) = row?;
            if statuses.is_empty() || statuses.contains(&status.as_str()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A run's stored epochs, in order.
    pub fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>> {
        let mut stmt = self.conn.prepare(
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc, train_seconds, seconds
             FROM epochs WHERE run_id = ?1 ORDER BY epoch",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(EpochMetrics {
                epoch: r.get::<_, i64>(0)? as usize,
                // SQLite stores NaN as NULL.
                train_loss: r.get::<_, Option<f64>>(1)?.unwrap_or(f64::NAN),
                train_acc: r.get(2)?,
                test_loss: r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN),
                test_acc: r.get(4)?,
                train_seconds: r.get(5)?,
                seconds: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A run's stored weights of one kind (`initial` or `final`).
    pub fn weights(&self, run_id: i64, kind: &str) -> Result<Option<Snapshot>> {
        let mut stmt = self.conn.prepare(
            "SELECT layer, param, shape, dtype, data FROM weights WHERE run_id = ?1 AND kind = ?2
             ORDER BY layer, param = 'bias'",
        )?;
        let rows = stmt.query_map(params![run_id, kind], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        let mut tensors = Vec::new();
        let mut dtype = None;
        for row in rows {
            let (layer, param, shape, dt, data) = row?;
            dtype = Some(if dt == "f64" { Dtype::F64 } else { Dtype::F32 });
            tensors.push(Tensor {
                layer: layer as usize,
                param: if param == "bias" { "bias" } else { "weight" },
                shape: serde_json::from_str(&shape).unwrap_or_default(),
                data,
            });
        }
        Ok(dtype.map(|dtype| Snapshot { dtype, tensors }))
    }

    /// Run any SQL on a read-only connection and collect the result.
    pub fn query(&self, sql: &str) -> Result<Table> {
        let mut stmt = self
            .conn
            .prepare(sql)
            .map_err(|e| Error::Usage(format!("SQL error: {e}")))?;
        let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let n = columns.len();
        let mut rows = Vec::new();
        let mut cursor = stmt
            .query([])
            .map_err(|e| Error::Usage(format!("SQL error: {e}")))?;
        while let Some(row) = cursor
            .next()
            .map_err(|e| Error::Usage(format!("SQL error: {e}")))?
        {
            rows.push(
                (0..n)
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            );
        }
        Ok(Table { columns, rows })
    }
}

/// Insert a `pending` row for a planned run; the owner and envelope columns are filled when a process
/// claims it.
fn insert_pending(tx: &Transaction<'_>, experiment_id: i64, run: &PlannedRun) -> Result<i64> {
    let c = &run.config;
    let overrides: serde_json::Map<String, serde_json::Value> = run
        .overrides
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    tx.execute(
        "INSERT INTO runs (experiment_id, name, status, seed, sizes, activation, init, dtype, batch_size,
            learning_rate, epochs, drop_last, data_dir, data_format, limit_train, limit_test, overrides,
            config_toml, config_hash, seed_group, created_at)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20)",
        params![
            experiment_id,
            run.name,
            c.train.seed as i64,
            serde_json::to_string(&c.model.sizes).unwrap_or_default(),
            enum_str(&c.model.activation),
            enum_str(&c.model.init),
            c.model.dtype.as_str(),
            c.train.batch_size as i64,
            c.train.learning_rate,
            c.train.epochs as i64,
            c.train.drop_last,
            c.data.dir,
            enum_str(&c.data.format),
            c.data.limit_train.map(|v| v as i64),
            c.data.limit_test.map(|v| v as i64),
            serde_json::Value::Object(overrides).to_string(),
            c.to_toml(),
            c.hash(),
            seed_group(c),
            now(),
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Put a failed run back to `pending` with nothing stored: it will be trained from the start.
fn reset_run(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.execute("DELETE FROM epochs WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM weights WHERE run_id = ?1", [id])?;
    tx.execute(
        "UPDATE runs SET status = 'pending', epochs_done = 0, train_loss = NULL, train_acc = NULL,
            test_loss = NULL, test_acc = NULL, diverged_epoch = NULL, error = NULL, started_at = NULL,
            finished_at = NULL, seconds = NULL, checkpoint_epoch = NULL, checkpoint_rng = NULL WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Is the process that owns a run still there? Checked by pid on this host; a run owned by another host
/// is taken for alive (its heartbeat decides).
pub fn owner_alive(pid: Option<i64>, host: &str) -> bool {
    match pid {
        Some(pid) if host == hostname() => {
            pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        }
        Some(_) => true,
        None => false,
    }
}

fn parse_stream_state(s: &str) -> Option<StreamState> {
    let mut it = s.split(':');
    let state = StreamState {
        seed: it.next()?.parse().ok()?,
        stream: it.next()?.parse().ok()?,
        word_pos: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(state)
}

fn insert_weights(
    tx: &Transaction<'_>,
    run_id: i64,
    kind: &str,
    epoch: usize,
    s: &Snapshot,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO weights (run_id, kind, epoch, layer, param, shape, dtype, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for t in &s.tensors {
        stmt.execute(params![
            run_id,
            kind,
            epoch as i64,
            t.layer as i64,
            t.param,
            serde_json::to_string(&t.shape).unwrap_or_default(),
            s.dtype.as_str(),
            t.data
        ])?;
    }
    Ok(())
}

/// The lowercase name serde gives a unit enum variant.
fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Hash of the config with the seed fixed: runs sharing it differ only by seed.
fn seed_group(c: &RunConfig) -> String {
    let mut c = c.clone();
    c.train.seed = 0;
    c.hash()
}
