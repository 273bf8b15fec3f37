//! The schema: the tables and views of a results store (the product's public interface, documented in the
//! README), how a file is recognised as a store before anything is changed in it, and the migrations that
//! bring an older store to [`SCHEMA_VERSION`].

use rusqlite::{Connection, params};

use crate::error::{Error, Result};

/// Bump when the schema changes; older files are migrated, newer ones refused.
pub const SCHEMA_VERSION: i64 = 9;

/// `PRAGMA application_id` of a store ("MLPR"): how a file says it is one, beside its tables.
pub const APPLICATION_ID: i64 = 0x4d4c_5052;

/// Version 1: the tables and views as first released. A new store is created as version 1, then migrated
/// (see [`MIGRATIONS`]), so that new and migrated stores have the same columns in the same order.
pub(crate) const SCHEMA: &str = r#"
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

/// What each version adds, in order: `MIGRATIONS[v - 1]` takes version v to v + 1.
const MIGRATIONS: &[&str] = &[
    // 2: fencing of claims, the owner's identity beyond its pid, and hashes of every stored bit.
    "ALTER TABLE runs ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;     -- fencing token: +1 per claim
     ALTER TABLE runs ADD COLUMN owner_start TEXT;                     -- the owner process's boot id, pid namespace and start time
     ALTER TABLE runs ADD COLUMN owner_task TEXT;                      -- the scheduler task that owns the run (e.g. a Slurm array task)
     ALTER TABLE runs ADD COLUMN heartbeat_every REAL;                 -- the owner's heartbeat interval, seconds
     ALTER TABLE runs ADD COLUMN checkpoint_sha256 TEXT;               -- hash of the checkpoint's weights
     ALTER TABLE runs ADD COLUMN metrics_sha256 TEXT;                  -- hash of the run's epoch rows
     ALTER TABLE experiments ADD COLUMN invocation TEXT;               -- host:pid:nanoseconds of the invocation",
    // 3: run management (tags, notes, soft deletes) and initial weights kept as a hash only.
    "ALTER TABLE runs ADD COLUMN note TEXT;                            -- the user's note (runner note)
     ALTER TABLE runs ADD COLUMN deleted_at TEXT;                      -- soft delete (runner rm); NULL: not deleted
     ALTER TABLE runs ADD COLUMN initial_stored INTEGER NOT NULL DEFAULT 1; -- 0: initial weights regenerated from the seed on demand
     CREATE TABLE tags (
         run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         tag    TEXT NOT NULL,
         PRIMARY KEY (run_id, tag)
     );",
    // 4: a validation split, and adaptive searches (successive halving, Hyperband): their schedules, the
    // runs of each rung and what was decided; runs `paused` at a rung and `pruned` by a decision.
    "ALTER TABLE epochs ADD COLUMN val_loss REAL;                      -- on the held-out validation samples (NULL: no split)
     ALTER TABLE epochs ADD COLUMN val_acc REAL;
     ALTER TABLE runs ADD COLUMN validation INTEGER;                   -- data.validation: training samples held out
     ALTER TABLE runs ADD COLUMN val_loss REAL;
     ALTER TABLE runs ADD COLUMN val_acc REAL;
     ALTER TABLE runs ADD COLUMN search TEXT;                          -- the search that queued the run (NULL: none)
     CREATE TABLE searches (
         search      TEXT PRIMARY KEY,      -- SHA-256 of the method, eta, metric and each rung's epochs and candidates
         experiment  TEXT NOT NULL,
         method      TEXT NOT NULL,         -- halving or hyperband
         eta         INTEGER NOT NULL,
         metric      TEXT NOT NULL,         -- val_acc, val_loss, test_acc or test_loss
         min_epochs  INTEGER NOT NULL,
         max_epochs  INTEGER NOT NULL,
         schedule    TEXT NOT NULL,         -- JSON: for each bracket, the epochs of each rung
         created_at  TEXT NOT NULL
     );
     CREATE TABLE rung_members (
         search      TEXT NOT NULL REFERENCES searches(search),
         bracket     INTEGER NOT NULL,      -- 0-based (halving has one)
         rung        INTEGER NOT NULL,      -- 0-based
         config_hash TEXT NOT NULL,         -- the run, by its config (ids differ between stores)
         epochs      INTEGER NOT NULL,      -- the epochs the run has at this rung
         value       REAL,                  -- the metric there, once decided (NULL: diverged, failed or gone)
         place       INTEGER,               -- once decided: 1 for the best of the rung
         promoted    INTEGER,               -- once decided: 1 promoted to the next rung, 0 not
         decided_at  TEXT,
         PRIMARY KEY (search, bracket, rung, config_hash)
     );
     CREATE INDEX rung_members_by_config ON rung_members(config_hash);
     CREATE INDEX experiments_by_name ON experiments(name);            -- compare, the dashboard: by name",
    // 5: what the tool concludes. A run may belong to several experiments (`members`: a config that two
    // specs share is trained once and seen by both); a run trained again with --force is superseded by
    // the new attempt (history, out of every view and statistic); each experiment stores how its best is
    // chosen; each finished run a fingerprint of its result; each run where its data was.
    "ALTER TABLE experiments ADD COLUMN metric TEXT;                  -- the selection metric: how the best is chosen
     ALTER TABLE runs ADD COLUMN superseded_by INTEGER;                -- the later attempt of this config (--force): this row is history
     ALTER TABLE runs ADD COLUMN result_sha256 TEXT;                   -- the result fingerprint: config, data, metrics without timings, weights
     ALTER TABLE runs ADD COLUMN data_path TEXT;                       -- the data folder as an absolute path, where the run was trained
     CREATE TABLE members (
         experiment TEXT NOT NULL,          -- an experiment's name
         run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         name       TEXT NOT NULL,          -- the run's name in that experiment
         overrides  TEXT NOT NULL,          -- JSON object: the values that experiment's sweep set for it
         added_at   TEXT NOT NULL,
         PRIMARY KEY (experiment, run_id)
     );
     CREATE INDEX members_by_run ON members(run_id);
     INSERT INTO members (experiment, run_id, name, overrides, added_at)
         SELECT e.name, r.id, r.name, r.overrides, r.created_at
         FROM runs r JOIN experiments e ON e.id = r.experiment_id;
     UPDATE runs SET superseded_by = (SELECT min(y.id) FROM runs y
                                      WHERE y.config_hash = runs.config_hash AND y.id > runs.id)
     WHERE status != 'pruned'
       AND EXISTS (SELECT 1 FROM runs y WHERE y.config_hash = runs.config_hash AND y.id > runs.id);",
    // 6: optimizers. Each epoch's learning rate (schedules), and the optimizer's state (velocities, Adam's
    // moments) with the checkpoint it belongs to, hashed like the checkpoint's weights.
    "ALTER TABLE epochs ADD COLUMN learning_rate REAL;                -- the rate of the epoch's first step (NULL: before version 6)
     ALTER TABLE runs ADD COLUMN optimizer TEXT;                       -- [optimizer] in short: sgd, adamw wd=0.01 cosine(min=0) warmup=100, ...
     UPDATE runs SET optimizer = 'sgd';                                -- every run before version 6
     ALTER TABLE runs ADD COLUMN dropout TEXT;                         -- model.dropout: 0, 0.2 or [0.2,0.5] (one rate per hidden layer)
     UPDATE runs SET dropout = '0';
     ALTER TABLE runs ADD COLUMN checkpoint_state_sha256 TEXT;         -- hash of the checkpoint's optimizer state (NULL: none)
     ALTER TABLE runs ADD COLUMN stopped_epoch INTEGER;                -- early stopping ended the run after this epoch (NULL: it did not)
     ALTER TABLE runs ADD COLUMN stop_reason TEXT;                     -- why, in words
     CREATE TABLE checkpoint_state (
         run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         epoch  INTEGER NOT NULL,           -- the checkpoint's epoch
         layer  INTEGER NOT NULL,           -- 1-based layer l
         param  TEXT NOT NULL,              -- weight.velocity, bias.velocity, weight.m, bias.m, weight.v, bias.v;
                                            -- early_stop (layer 0: best, its epoch, the wait, as f64), best.weight, best.bias
         shape  TEXT NOT NULL,              -- JSON array, the parameter's shape
         dtype  TEXT NOT NULL,              -- f32 or f64
         data   BLOB NOT NULL,              -- little-endian values, row-major
         PRIMARY KEY (run_id, layer, param)
     );",
    // 7: the elementary functions (exp, ln, tanh, cos) of a run, recorded in its envelope: the owned ones
    // (`libm-0.2.16`) from this version on; NULL for the platform's C library, as every run before.
    "ALTER TABLE runs ADD COLUMN math TEXT;                             -- elementary functions: libm-0.2.16, or NULL (the platform's C library)",
    // 8: where a completed run's final weights err: its confusion matrices (test, validation) and the
    // test samples it gets wrong. Runs completed before version 8 have none.
    "CREATE TABLE confusion (
         run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         split     TEXT NOT NULL,            -- test or validation
         actual    INTEGER NOT NULL,         -- the sample's label
         predicted INTEGER NOT NULL,         -- the class the final weights give it (argmax)
         count     INTEGER NOT NULL,         -- samples: only cells above 0 are stored
         PRIMARY KEY (run_id, split, actual, predicted)
     );
     CREATE TABLE misclassified (
         run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         sample     INTEGER NOT NULL,        -- 0-based index in the test split (file order)
         actual     INTEGER NOT NULL,
         predicted  INTEGER NOT NULL,
         confidence REAL NOT NULL,           -- the softmax probability of the predicted class
         PRIMARY KEY (run_id, sample)
     );",
    // 9: each epoch's samples and correct predictions per class on the test and validation splits
    // (epochs stored before version 9 have none).
    "CREATE TABLE epoch_classes (
         run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
         epoch   INTEGER NOT NULL,
         split   TEXT NOT NULL,              -- test or validation
         class   INTEGER NOT NULL,           -- the label
         samples INTEGER NOT NULL,
         correct INTEGER NOT NULL,           -- predicted as itself (argmax, as accuracy counts)
         PRIMARY KEY (run_id, epoch, split, class)
     );",
];

/// The selection metric of experiment rows written before version 5 (or merged from such a store): a
/// search's metric, else `val_acc` when every run it queued holds a validation split out, else
/// `test_acc`, as a spec of today would default it.
pub(crate) const FILL_METRIC: &str = "
    UPDATE experiments SET metric = coalesce(
        (SELECT s.metric FROM searches s WHERE s.experiment = experiments.name
         ORDER BY s.created_at DESC LIMIT 1),
        CASE WHEN EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = experiments.id)
                  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = experiments.id
                                  AND r.validation IS NULL)
             THEN 'val_acc' ELSE 'test_acc' END)
    WHERE metric IS NULL";

/// Version 4 adds the statuses `paused` and `pruned` to the CHECK constraint of `runs.status`: SQLite cannot
/// alter a constraint, so the table's stored definition is edited in place (the documented procedure for
/// schema changes that do not touch stored data; a wider CHECK holds for every existing row).
pub(crate) const STATUS_CHECK_V1: &str = "'failed', 'interrupted')";
pub(crate) const STATUS_CHECK_V4: &str = "'failed', 'interrupted', 'paused', 'pruned')";

/// The views, as of [`SCHEMA_VERSION`]: dropped and created again after every migration. Deleted runs
/// (`runner rm`) are left out of `run_summary`, `best_runs` and `seed_stats`; `run_summary_all` has them,
/// told by `deleted_at`. Only syntax that older SQLite shells read (no ORDER BY inside an aggregate): a
/// user's `sqlite3` parses the whole schema when it opens the file.
const VIEWS: &str = r#"
CREATE VIEW run_summary_all AS
SELECT r.id AS run_id, m.experiment, m.name, r.status, r.seed, r.sizes, r.activation, r.init,
       r.dtype, r.batch_size, r.learning_rate, r.epochs, r.epochs_done, r.train_loss, r.train_acc,
       r.test_loss, r.test_acc, r.seconds, r.finished_at, r.validation, r.val_loss, r.val_acc,
       (SELECT group_concat(tag, ',') FROM (SELECT tag FROM tags t WHERE t.run_id = r.id ORDER BY tag)) AS tags,
       r.note, r.deleted_at, r.superseded_by, r.result_sha256, r.optimizer, r.dropout, r.stopped_epoch
FROM members m JOIN runs r ON r.id = m.run_id;

CREATE VIEW run_summary AS
SELECT * FROM run_summary_all WHERE deleted_at IS NULL AND superseded_by IS NULL;

CREATE VIEW experiment_metrics AS
SELECT e.name AS experiment, e.metric
FROM experiments e WHERE e.id = (SELECT max(x.id) FROM experiments x WHERE x.name = e.name);

CREATE VIEW best_runs AS
SELECT * FROM (
    SELECT s.*, x.metric AS selected_by, ROW_NUMBER() OVER (PARTITION BY s.experiment ORDER BY
               CASE x.metric WHEN 'val_acc' THEN -s.val_acc WHEN 'val_loss' THEN s.val_loss
                             WHEN 'test_loss' THEN s.test_loss ELSE -s.test_acc END IS NULL,
               CASE x.metric WHEN 'val_acc' THEN -s.val_acc WHEN 'val_loss' THEN s.val_loss
                             WHEN 'test_loss' THEN s.test_loss ELSE -s.test_acc END,
               s.run_id) AS rank
    FROM run_summary s JOIN experiment_metrics x ON x.experiment = s.experiment
    WHERE s.status = 'completed'
) WHERE rank = 1;

CREATE VIEW seed_stats AS
SELECT m.experiment, r.sizes, r.activation, r.init, r.dtype, r.batch_size, r.learning_rate,
       r.epochs, COUNT(*) AS seeds,
       AVG(r.test_acc) AS mean_test_acc,
       CASE WHEN COUNT(*) > 1 THEN
           sqrt(max(0.0, (SUM(r.test_acc * r.test_acc) - COUNT(*) * AVG(r.test_acc) * AVG(r.test_acc))
                         / (COUNT(*) - 1)))
       END AS std_test_acc,
       MIN(r.test_acc) AS min_test_acc, MAX(r.test_acc) AS max_test_acc,
       AVG(r.test_loss) AS mean_test_loss, AVG(r.seconds) AS mean_seconds,
       AVG(r.val_acc) AS mean_val_acc, AVG(r.val_loss) AS mean_val_loss, r.optimizer, r.dropout
FROM members m JOIN runs r ON r.id = m.run_id
WHERE r.status = 'completed' AND r.deleted_at IS NULL AND r.superseded_by IS NULL
GROUP BY m.experiment, r.seed_group;

CREATE VIEW rungs AS
SELECT s.experiment, m.bracket, m.rung, r.id AS run_id, x.name, m.epochs, s.metric, m.value, m.place,
       m.promoted, m.decided_at, m.config_hash, m.search
FROM rung_members m JOIN searches s ON s.search = m.search
LEFT JOIN runs r ON r.id = (SELECT max(y.id) FROM runs y JOIN members z ON z.run_id = y.id
                            WHERE y.config_hash = m.config_hash AND z.experiment = s.experiment
                            AND y.deleted_at IS NULL AND y.superseded_by IS NULL)
LEFT JOIN members x ON x.run_id = r.id AND x.experiment = s.experiment;

CREATE VIEW class_accuracy AS
SELECT run_id, split, actual AS class, SUM(count) AS samples,
       SUM(CASE WHEN predicted = actual THEN count ELSE 0 END) AS correct,
       1.0 * SUM(CASE WHEN predicted = actual THEN count ELSE 0 END) / SUM(count) AS accuracy
FROM confusion GROUP BY run_id, split, actual;
"#;

/// The tables a version-1 store has, with a column each that only this schema has: how a store written
/// before `application_id` was set is told from another program's file.
const V1_MARKERS: &[(&str, &str)] = &[
    ("experiments", "spec_toml"),
    ("runs", "config_hash"),
    ("epochs", "train_seconds"),
    ("weights", "kind"),
];

/// What a file is, read without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recognised {
    /// No tables at all: a new file.
    Empty,
    /// A store of this schema version.
    Store(i64),
}

/// Tell what the database behind `conn` is, reading only: a store (and its version), an empty file, or
/// (an error) another program's database or a newer store.
pub(crate) fn recognise(conn: &Connection, path: &std::path::Path) -> Result<Recognised> {
    let err = |msg: String| Error::Store {
        path: path.to_path_buf(),
        msg,
    };
    let not_db = |e: rusqlite::Error| {
        let msg = e.to_string();
        if msg.contains("not a database") || msg.contains("file is encrypted") {
            err("is not a SQLite database (another kind of file?); pass another --db path".into())
        } else if matches!(&e, rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::DatabaseCorrupt)
        {
            Error::Corrupt {
                path: path.to_path_buf(),
                msg: format!(
                    "SQLite cannot read its structure ({msg}): the file was cut short or overwritten; \
                     restore it from a copy (runner check lists what it can still read)"
                ),
            }
        } else {
            err(format!("cannot read it: {msg}"))
        }
    };
    // One read transaction: another process creating the store at this moment commits its schema, its
    // application_id and its version at once, and these reads must see all of it or none.
    conn.execute_batch("BEGIN").map_err(not_db)?;
    let read = || -> rusqlite::Result<(i64, i64, i64, bool)> {
        let app = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        Ok((app, version, tables, has_v1_tables(conn)?))
    };
    let result = read();
    let end = conn.execute_batch("COMMIT");
    let (app, version, tables, v1_tables) = result.map_err(not_db)?;
    end.map_err(not_db)?;
    let foreign = || {
        err(format!(
            "is a SQLite database of another program (application_id {app}, user_version {version}, \
             {tables} tables, not the mlp-runner schema); pass another --db"
        ))
    };
    if (app == 0 || app == APPLICATION_ID) && version == 0 && tables == 0 {
        return Ok(Recognised::Empty);
    }
    if app == APPLICATION_ID && version == 0 {
        return Err(err(format!(
            "is an mlp-runner store whose creation did not finish (application_id {app}, schema version 0, \
             {tables} tables): it holds no runs; delete it, or pass another --db"
        )));
    }
    let ours = app == APPLICATION_ID || (app == 0 && version == 1 && v1_tables);
    if !ours {
        return Err(foreign());
    }
    if version > SCHEMA_VERSION {
        return Err(err(format!(
            "was written by a newer mlp-runner (schema version {version}; this build knows {SCHEMA_VERSION}); \
             upgrade runner or use another --db"
        )));
    }
    if version < 1 {
        return Err(foreign());
    }
    Ok(Recognised::Store(version))
}

fn has_v1_tables(conn: &Connection) -> rusqlite::Result<bool> {
    for (table, column) in V1_MARKERS {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |r| r.get(0),
        )?;
        if n != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Bring a store from `version` to [`SCHEMA_VERSION`] (0: create it), inside the caller's write
/// transaction. Hashes that a new column holds are computed for the rows already there.
pub(crate) fn migrate(tx: &rusqlite::Transaction<'_>, version: i64) -> Result<()> {
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let to = i as i64 + 2;
        if version < to {
            tx.execute_batch(sql)?;
            if to == 2 {
                backfill_hashes(tx)?;
            }
            if to == 4 {
                widen_status_check(tx)?;
            }
            if to == 5 {
                tx.execute_batch(FILL_METRIC)?;
                backfill_results(tx)?;
            }
        }
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(
            "DROP VIEW IF EXISTS seed_stats; DROP VIEW IF EXISTS best_runs; DROP VIEW IF EXISTS run_summary;
             DROP VIEW IF EXISTS run_summary_all; DROP VIEW IF EXISTS rungs;
             DROP VIEW IF EXISTS experiment_metrics; DROP VIEW IF EXISTS class_accuracy;",
        )?;
        tx.execute_batch(VIEWS)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Accept `paused` and `pruned` in `runs.status`: edit the table's definition in `sqlite_schema` and bump
/// the schema cookie so that every connection reads the new definition.
fn widen_status_check(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'runs'",
        [],
        |r| r.get(0),
    )?;
    if sql.contains(STATUS_CHECK_V4) {
        return Ok(());
    }
    if sql.matches(STATUS_CHECK_V1).count() != 1 {
        return Err(crate::error::Error::internal(
            "the runs table's status constraint is not the one this migration knows",
        ));
    }
    let cookie: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch("PRAGMA writable_schema = ON")?;
    let edited = tx.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'runs'",
        [sql.replace(STATUS_CHECK_V1, STATUS_CHECK_V4)],
    );
    tx.execute_batch(&format!("PRAGMA schema_version = {}", cookie + 1))?;
    tx.execute_batch("PRAGMA writable_schema = OFF")?;
    edited?;
    Ok(())
}

/// Version 2 hashes each run's epoch rows and its checkpoint: compute them for runs stored before.
fn backfill_hashes(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let ids: Vec<(i64, bool)> = tx
        .prepare("SELECT id, checkpoint_epoch IS NOT NULL FROM runs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, has_checkpoint) in ids {
        let metrics = super::integrity::metrics_sha256(tx, id)?;
        tx.execute(
            "UPDATE runs SET metrics_sha256 = ?2 WHERE id = ?1",
            params![id, metrics],
        )?;
        if has_checkpoint {
            let bytes = super::integrity::weights_sha256(tx, id, super::WeightsKind::Checkpoint)?;
            tx.execute(
                "UPDATE runs SET checkpoint_sha256 = ?2 WHERE id = ?1",
                params![id, bytes],
            )?;
        }
    }
    Ok(())
}

/// Version 5 fingerprints each finished run's result: compute it for the runs stored before.
fn backfill_results(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let ids: Vec<i64> = tx
        .prepare(&format!(
            "SELECT id FROM runs WHERE status IN {}",
            super::RunStatus::sql_list(&super::RunStatus::FINISHED)
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        let fingerprint = super::integrity::result_sha256(tx, id)?;
        tx.execute(
            "UPDATE runs SET result_sha256 = ?2 WHERE id = ?1",
            params![id, fingerprint],
        )?;
    }
    Ok(())
}
