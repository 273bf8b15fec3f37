//! Merging result stores (e.g. one per shard of a sweep) into one.
//!
//! Every input is checked before anything is written: each is a store, none is the output, and every
//! finished run's stored bits match their hashes. The merge then happens in one transaction of the output
//! (or, for a new output, in a temporary file renamed into place at the end), so an interrupted or refused
//! merge leaves the output as it was. It is idempotent; provenance is kept (every copied row keeps its
//! host, pid, times and envelope); and a run present in two stores must be bit-identical in both (its
//! weights, hashed from the bytes, and every epoch's metrics), or it is reported, never overwritten.
//! A config trained with two kernel contracts is two results of one configuration: both are kept, one as
//! history ([`Prefer`]). Experiments' memberships of the runs come along.
//!
//! Part of the store (it reads and writes the schema); imports `core` (shards, kernels), never `sweep`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::core::shard::Shard;
use crate::error::{Error, Result};
use crate::files::same_file;
use crate::store::integrity::{
    check_run, has_column, metrics_sha256, result_sha256, weights_sha256,
};
use crate::store::{RunStatus, Store, WeightsKind};

/// The statuses of the runs a merge copies: finished ones, and runs of a search paused at a rung (with
/// their checkpoint: the next rung continues from it).
const COPIED: [RunStatus; 4] = [
    RunStatus::Completed,
    RunStatus::Diverged,
    RunStatus::Pruned,
    RunStatus::Paused,
];

/// A run that a source holds unfinished: not copied.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub source: PathBuf,
    pub run_id: i64,
    pub name: String,
    pub status: RunStatus,
    pub config_hash: String,
}

/// A run the merged store should hold finished and does not: its name, config hash, the shard that owes
/// it (when the shard count is known), and where it stands.
#[derive(Debug, Clone)]
pub struct Missing {
    pub name: String,
    pub config_hash: String,
    pub shard: Option<Shard>,
    /// e.g. "interrupted in results/shards/shard-1-of-3.db", or "in no input".
    pub state: String,
}

/// The runs a merge must end with, finished: those of a spec, and the shard count to name who owes one.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// (run name, config hash) of every run of the sweep.
    pub runs: Vec<(String, String)>,
    pub shards: Option<u64>,
}

/// What a merge did.
#[derive(Debug, Clone, Default)]
pub struct MergeReport {
    pub experiments_added: usize,
    pub runs_added: usize,
    /// Runs already in the output (or in an earlier source) with the same bits.
    pub runs_identical: usize,
    /// Runs of a search stored further along (more epochs, or finished) in a source than in the output,
    /// every shared epoch and the initial weights agreeing bit for bit: the output takes the longer copy.
    pub runs_extended: usize,
    /// Rungs of a search decided in the output by this merge (their runs all arrived).
    pub rungs_decided: usize,
    /// Runs not finished (pending, running, interrupted, failed) in their source and finished in no
    /// input nor the output.
    pub unfinished: Vec<Unfinished>,
    /// Reproducibility failures: the same config stored with different bits by the same kernel contract.
    pub conflicts: Vec<String>,
    /// The same config trained with different kernels (whose bits legitimately differ): both copies
    /// kept, one current and one as history, as [`Prefer`] says.
    pub kernel_differences: Vec<String>,
    /// Runs the merged store does not hold finished: the sweep's (when it was given) and every run an
    /// input holds unfinished.
    pub missing: Vec<Missing>,
}

/// Which copy of a run stays current when an input and the output hold the same config trained with
/// different kernels (different results of one configuration, not a failure): the other is kept as
/// history (`superseded_by`, listed by `ls --all`, out of every view and statistic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prefer {
    /// The output's copy (or the first input's, for a new output).
    #[default]
    Output,
    /// The input's copy.
    Input,
}

/// Merge the finished runs of `sources` into the store at `out` (created if needed), and say which runs
/// (of `expected`, and every run an input holds unfinished) the merged store still lacks.
pub fn merge(
    sources: &[&Path],
    out: &Path,
    expected: &Expected,
    prefer: Prefer,
) -> Result<MergeReport> {
    // 0. The output is not a side file of an input or of another database (SQLite would remove it).
    if let Some(db) = crate::files::side_file_of(out, sources) {
        return Err(Error::Usage(format!(
            "-o {}: is a side file of the SQLite database {} (its write-ahead log, shared memory or \
             journal), which SQLite removes or replaces when that database is next opened; merge into \
             another path (nothing was written)",
            out.display(),
            db.display()
        )));
    }
    // 1. Every input, checked before anything is written.
    let mut inputs = Vec::with_capacity(sources.len());
    for src in sources {
        if same_file(src, out) {
            return Err(Error::Usage(format!(
                "{} is the output itself; merge other files into it (nothing was written)",
                src.display()
            )));
        }
        let store = Store::open_read_only(src)?;
        let finished = store.run_ids(None, &COPIED)?;
        for id in finished {
            let check = check_run(&store, id)?;
            if let Some(f) = check.findings.first() {
                return Err(Error::Corrupt {
                    path: src.to_path_buf(),
                    msg: format!(
                        "run {id}, {}; nothing was merged (`runner check --db {}` lists every problem)",
                        f.0,
                        src.display()
                    ),
                });
            }
        }
        inputs.push(store);
    }
    // 2. The output: an existing store is merged into in one transaction; a new one is built in a
    // temporary file beside it and renamed into place.
    if out.exists() {
        let dest = Store::open(out)?;
        merge_into(&dest, &inputs, expected, prefer)
    } else {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "merged.db".into());
        remove_leftovers(out, &name);
        let tmp = out.with_file_name(format!(".{name}.merging-{}", std::process::id()));
        let result = (|| {
            let dest = Store::open(&tmp)?;
            let report = merge_into(&dest, &inputs, expected, prefer)?;
            dest.close()?;
            std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
            Ok(report)
        })();
        if result.is_err() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
            }
        }
        result
    }
}

/// Remove what merges into `out` that were killed left behind: `.<name>.merging-<pid>` files (and their
/// side files) of processes that are gone. A live merge's are left alone.
fn remove_leftovers(out: &Path, name: &str) {
    let prefix = format!(".{name}.merging-");
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let pid = ["-wal", "-shm", "-journal"]
            .iter()
            .find_map(|s| rest.strip_suffix(s))
            .unwrap_or(rest);
        let gone = pid
            .parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && !crate::store::owner::pid_alive(p));
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn merge_into(
    dest: &Store,
    inputs: &[Store],
    expected: &Expected,
    prefer: Prefer,
) -> Result<MergeReport> {
    let mut report = MergeReport::default();
    let tx = dest.write_tx()?;
    // Where each run the merge copied came from, to name it in a report line.
    let mut origin: HashMap<i64, (PathBuf, i64)> = HashMap::new();
    for src in inputs {
        let r = merge_one(&tx, src, prefer, &mut origin, &mut report)
            .and_then(|()| merge_rungs(&tx, src, &mut report));
        r.map_err(|e| e.on_file(src.path()))?;
    }
    // Experiments of a store older than version 5 get the selection metric their spec would have now.
    tx.execute_batch(crate::store::schema::FILL_METRIC)?;
    // A search's rungs whose runs all arrived are decided now, as the process that trained them last
    // would have: the same decisions, from the same stored metrics.
    report.rungs_decided = crate::store::search::settle_in(&tx)?;
    // What the merged store lacks: runs unfinished in an input and finished nowhere, and runs of the
    // sweep in no input at all.
    let finished = |hash: &str| -> Result<bool> {
        Ok(tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE config_hash = ?1 AND status IN {})",
                RunStatus::sql_list(&RunStatus::FINISHED)
            ),
            [hash],
            |r| r.get(0),
        )?)
    };
    let shard_of = |hash: &str| {
        expected.shards.map(|count| {
            let index = (0..count)
                .find(|&i| Shard { index: i, count }.contains(hash))
                .unwrap_or(0);
            Shard { index, count }
        })
    };
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for u in &report.unfinished {
        if !finished(&u.config_hash)? && seen.insert(u.config_hash.clone()) {
            missing.push(Missing {
                name: u.name.clone(),
                config_hash: u.config_hash.clone(),
                shard: shard_of(&u.config_hash),
                state: format!("{} in {}", u.status, u.source.display()),
            });
        }
    }
    // A run of a search copied paused at its rung is there, waiting for a later round to train it on.
    let paused = |hash: &str| -> Result<Option<i64>> {
        Ok(tx
            .query_row(
                "SELECT max(epochs_done) FROM runs WHERE config_hash = ?1 AND status = 'paused'",
                [hash],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    };
    for (name, hash) in &expected.runs {
        if !finished(hash)? && seen.insert(hash.clone()) {
            let state = match paused(hash)? {
                Some(epochs) => format!(
                    "paused at its rung after epoch {epochs} in the merged store: a later round of its \
                     search trains it on"
                ),
                None => "in no input".into(),
            };
            missing.push(Missing {
                name: name.clone(),
                config_hash: hash.clone(),
                shard: shard_of(hash),
                state,
            });
        }
    }
    report.missing = missing;
    tx.commit()
        .map_err(|e| Error::from(e).on_file(dest.path()))?;
    Ok(report)
}

/// Column names of `table` in a database.
fn columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The values of `cols` of the row `id` of `table` in `conn`.
fn row_values(conn: &Connection, table: &str, cols: &[String], id: i64) -> Result<Vec<Value>> {
    // Table and column names come from the schema itself (pragma_table_info), never from input.
    let sql = format!("SELECT {} FROM {table} WHERE id = ?1", cols.join(", "));
    Ok(conn.query_row(&sql, [id], |r| {
        (0..cols.len()).map(|i| r.get::<_, Value>(i)).collect()
    })?)
}

/// The columns of `table` both databases have, but `except`.
fn shared_columns(
    dest: &Transaction<'_>,
    src: &Connection,
    table: &str,
    except: &[&str],
) -> Result<Vec<String>> {
    let theirs: BTreeSet<String> = columns(src, table)?.into_iter().collect();
    Ok(columns(dest, table)?
        .into_iter()
        .filter(|c| theirs.contains(c) && !except.contains(&c.as_str()))
        .collect())
}

fn merge_one(
    tx: &Transaction<'_>,
    src: &Store,
    prefer: Prefer,
    origin: &mut HashMap<i64, (PathBuf, i64)>,
    report: &mut MergeReport,
) -> Result<()> {
    let sconn = src.connection();
    // Ids, fencing and history are the output's own; the rest of a row is copied as it is.
    let run_cols = shared_columns(tx, sconn, "runs", &["id", "experiment_id", "superseded_by"])?;
    let exp_cols = shared_columns(tx, sconn, "experiments", &["id"])?;
    // An attempt a later one superseded (--force) is the source's history: not copied.
    let runs: Vec<(i64, i64, String, String, RunStatus)> = sconn
        .prepare(&format!(
            "SELECT id, experiment_id, config_hash, name, status FROM runs WHERE {} IS NULL ORDER BY id",
            src.col("superseded_by", 5)
        ))?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Each source run's row in the output, for its memberships.
    let mut mapped: HashMap<i64, i64> = HashMap::new();
    for (src_id, src_exp, hash, name, status) in runs {
        if !COPIED.contains(&status) {
            report.unfinished.push(Unfinished {
                source: src.path().to_path_buf(),
                run_id: src_id,
                name,
                status,
                config_hash: hash,
            });
            continue;
        }
        // Every copy the output holds of this config, its current one first.
        let existing: Vec<i64> = tx
            .prepare(&format!(
                "SELECT id FROM runs WHERE config_hash = ?1 AND status IN {}
                 ORDER BY superseded_by IS NOT NULL, status = 'paused', id",
                RunStatus::sql_list(&COPIED)
            ))?
            .query_map([&hash], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        // The source's copy beside another kernel's: kept, one of the two as history.
        let mut beside = None;
        if let Some(&current) = existing.first() {
            let mut settled = false;
            let mut differences = Vec::new();
            for &dest_id in &existing {
                match first_difference(sconn, src_id, tx, dest_id)? {
                    Difference::None => {
                        report.runs_identical += 1;
                        mapped.insert(src_id, dest_id);
                        settled = true;
                        break;
                    }
                    Difference::Prefix(further) => {
                        if further == Further::Source {
                            // The source has the run further along (a later rung): the output takes
                            // its copy.
                            replace_run(tx, sconn, src_id, dest_id)?;
                            report.runs_extended += 1;
                        } else {
                            report.runs_identical += 1;
                        }
                        mapped.insert(src_id, dest_id);
                        settled = true;
                        break;
                    }
                    Difference::Bits(d) => differences.push((dest_id, d)),
                }
            }
            if settled {
                continue;
            }
            let (dest_id, d) = differences.swap_remove(0);
            let kernels = (kernel_of(sconn, src_id)?, kernel_of(tx, dest_id)?);
            let contract = |k: &Option<String>| {
                k.as_deref()
                    .map(|k| crate::core::kernel::Kernel::contract(k).to_string())
            };
            let host = |conn: &Connection, id: i64| -> String {
                conn.query_row("SELECT host FROM runs WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .ok()
                .flatten()
                .map_or_else(|| "?".into(), |h| crate::text::clean(&h).into_owned())
            };
            let here = |id: i64| match origin.get(&id) {
                Some((path, run)) => {
                    format!("run {run} of {} (host {})", path.display(), host(tx, id))
                }
                None => format!("run {id} of the output (host {})", host(tx, id)),
            };
            if contract(&kernels.0) == contract(&kernels.1) {
                report.conflicts.push(format!(
                    "run {} (config {}): run {src_id} of {} (host {}) and {} were trained with the same \
                     kernel ({}) but differ: {d}",
                    crate::text::clean(&name),
                    &hash[..hash.len().min(12)],
                    src.path().display(),
                    host(sconn, src_id),
                    here(dest_id),
                    crate::text::clean(kernels.0.as_deref().unwrap_or("unknown"))
                ));
                mapped.insert(src_id, dest_id);
                continue;
            }
            beside = Some((current, kernels, here(current)));
        }
        // The experiment row: the same invocation maps to one row (told apart by its `invocation`, or for
        // a store of schema version 1 by its name, spec text and time).
        // The experiment row: the same invocation maps to one row (told apart by its `invocation`, or for
        // a store of schema version 1 by its name, spec text and time).
        let invocation_col = src.col("invocation", 2);
        let (ename, etext, ecreated, einvocation): (String, String, String, Option<String>) = sconn
            .query_row(
                &format!(
                    "SELECT name, spec_toml, created_at, {invocation_col} FROM experiments WHERE id = ?1"
                ),
                [src_exp],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
        let dest_exp: Option<i64> = tx
            .query_row(
                "SELECT id FROM experiments WHERE name = ?1 AND spec_toml = ?2 AND created_at = ?3
                 AND invocation IS ?4",
                params![ename, etext, ecreated, einvocation],
                |r| r.get(0),
            )
            .optional()?;
        let dest_exp = match dest_exp {
            Some(id) => id,
            None => {
                let values = row_values(sconn, "experiments", &exp_cols, src_exp)?;
                insert(tx, "experiments", &exp_cols, &[], values)?;
                report.experiments_added += 1;
                tx.last_insert_rowid()
            }
        };
        let values = row_values(sconn, "runs", &run_cols, src_id)?;
        insert(
            tx,
            "runs",
            &run_cols,
            &[("experiment_id", Value::Integer(dest_exp))],
            values,
        )?;
        let new_id = tx.last_insert_rowid();
        copy_children(sconn, src_id, tx, new_id)?;
        // A source of an older schema has no epoch hash nor result fingerprint: the output's are
        // computed from the copied rows.
        tx.execute(
            "UPDATE runs SET metrics_sha256 = ?2, result_sha256 = ?3 WHERE id = ?1",
            params![
                new_id,
                metrics_sha256(tx, new_id)?,
                result_sha256(tx, new_id)?
            ],
        )?;
        origin.insert(new_id, (src.path().to_path_buf(), src_id));
        mapped.insert(src_id, new_id);
        report.runs_added += 1;
        if let Some((current, (theirs, ours), where_ours)) = beside {
            let (kept, history) = match prefer {
                Prefer::Output => (current, new_id),
                Prefer::Input => (new_id, current),
            };
            tx.execute(
                "UPDATE runs SET superseded_by = ?2 WHERE id = ?1",
                params![history, kept],
            )?;
            report.kernel_differences.push(format!(
                "run {} (config {}): {where_ours} was trained with kernel {} and run {src_id} of {} with \
                 kernel {}: different results of one configuration (each kernel gives its own bits); \
                 both kept, run {kept} current and run {history} as history (ls --all)",
                crate::text::clean(&name),
                &hash[..hash.len().min(12)],
                crate::text::clean(ours.as_deref().unwrap_or("unknown")),
                src.path().display(),
                crate::text::clean(theirs.as_deref().unwrap_or("unknown")),
            ));
        }
    }
    merge_members(tx, src, &mapped)
}

/// The kernel a stored run was trained with (its envelope's `gemm_kernel`).
fn kernel_of(conn: &Connection, id: i64) -> Result<Option<String>> {
    Ok(
        conn.query_row("SELECT gemm_kernel FROM runs WHERE id = ?1", [id], |r| {
            r.get(0)
        })?,
    )
}

/// The source's memberships of the runs it gave (`mapped`: its run id to the output's), each under its
/// name in its experiment, and for an experiment the output has no row of, the source's latest row
/// (its spec and selection metric).
fn merge_members(tx: &Transaction<'_>, src: &Store, mapped: &HashMap<i64, i64>) -> Result<()> {
    let sconn = src.connection();
    let rows: Vec<(String, i64, String, String)> = sconn
        .prepare(&format!(
            "SELECT m.experiment, m.run_id, m.name, m.overrides FROM {} m ORDER BY m.run_id",
            src.members()
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let exp_cols = shared_columns(tx, sconn, "experiments", &["id"])?;
    let mut known: BTreeSet<String> = BTreeSet::new();
    for (experiment, src_id, name, overrides) in rows {
        let Some(&dest_id) = mapped.get(&src_id) else {
            continue;
        };
        if known.insert(experiment.clone()) {
            let there: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM experiments WHERE name = ?1)",
                [&experiment],
                |r| r.get(0),
            )?;
            if !there {
                let src_exp: i64 = sconn.query_row(
                    "SELECT max(id) FROM experiments WHERE name = ?1",
                    [&experiment],
                    |r| r.get(0),
                )?;
                let values = row_values(sconn, "experiments", &exp_cols, src_exp)?;
                insert(tx, "experiments", &exp_cols, &[], values)?;
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO members (experiment, run_id, name, overrides, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![experiment, dest_id, name, overrides, crate::store::now()],
        )?;
    }
    Ok(())
}

fn insert(
    tx: &Transaction<'_>,
    table: &str,
    cols: &[String],
    extra: &[(&str, Value)],
    mut values: Vec<Value>,
) -> Result<()> {
    let mut names: Vec<&str> = cols.iter().map(String::as_str).collect();
    for (c, v) in extra {
        names.push(c);
        values.push(v.clone());
    }
    let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    tx.execute(
        &format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        ),
        rusqlite::params_from_iter(values),
    )?;
    Ok(())
}

/// Copy a run's epochs and its weights under its new id: initial and final, and the checkpoint of a run
/// paused at a rung (what its next rung continues from); a source without validation columns gives NULL.
fn copy_children(src: &Connection, src_id: i64, tx: &Transaction<'_>, new_id: i64) -> Result<()> {
    let val = if has_column(src, "epochs", "val_loss")? {
        "val_loss, val_acc"
    } else {
        "NULL, NULL"
    };
    let lr = if has_column(src, "epochs", "learning_rate")? {
        "learning_rate"
    } else {
        "NULL"
    };
    let epoch_cols = format!(
        "epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds, {val}, {lr}"
    );
    let paused: bool = src.query_row(
        "SELECT status = 'paused' FROM runs WHERE id = ?1",
        [src_id],
        |r| r.get(0),
    )?;
    // A paused run's optimizer state goes with its checkpoint (sources before schema 6 have none).
    let state = has_column(src, "checkpoint_state", "data")? && paused;
    let state_cols = "epoch, layer, param, shape, dtype, data";
    // Where a completed run errs (sources before schema 8 have none).
    let errors = if has_column(src, "confusion", "count")? {
        ""
    } else {
        "AND 0"
    };
    let classes = if has_column(src, "epoch_classes", "correct")? {
        ""
    } else {
        "AND 0"
    };
    let class_cols = "epoch, split, class, samples, correct";
    let (confusion_cols, miss_cols) = (
        "split, actual, predicted, count",
        "sample, actual, predicted, confidence",
    );
    for (read_columns, write_columns, table, filter) in [
        (confusion_cols, confusion_cols, "confusion", errors),
        (miss_cols, miss_cols, "misclassified", errors),
        (class_cols, class_cols, "epoch_classes", classes),
        (
            epoch_cols.as_str(),
            "epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds, val_loss, val_acc, \
             learning_rate",
            "epochs",
            "",
        ),
        (
            state_cols,
            state_cols,
            "checkpoint_state",
            if state { "" } else { "AND 0" },
        ),
        (
            "kind, epoch, layer, param, shape, dtype, data",
            "kind, epoch, layer, param, shape, dtype, data",
            "weights",
            if paused {
                ""
            } else {
                "AND kind != 'checkpoint'"
            },
        ),
    ] {
        // Table and column names are the fixed lists above; values are bound.
        let mut read = src.prepare(&format!(
            "SELECT {read_columns} FROM {table} WHERE run_id = ?1 {filter}"
        ))?;
        let n = write_columns.split(',').count();
        let marks: Vec<String> = (1..=n + 1).map(|i| format!("?{i}")).collect();
        let mut write = tx.prepare(&format!(
            "INSERT INTO {table} (run_id, {write_columns}) VALUES ({})",
            marks.join(", ")
        ))?;
        let mut rows = read.query([src_id])?;
        while let Some(r) = rows.next()? {
            let mut values = vec![Value::Integer(new_id)];
            for i in 0..n {
                values.push(r.get(i)?);
            }
            write.execute(rusqlite::params_from_iter(values))?;
        }
    }
    Ok(())
}

/// The output's copy of a run becomes the source's, which is further along: every column but its id
/// and experiment, and its epochs and weights.
fn replace_run(tx: &Transaction<'_>, src: &Connection, src_id: i64, dest_id: i64) -> Result<()> {
    let theirs: BTreeSet<String> = columns(src, "runs")?.into_iter().collect();
    let cols: Vec<String> = columns(tx, "runs")?
        .into_iter()
        .filter(|c| {
            theirs.contains(c) && !["id", "experiment_id", "superseded_by"].contains(&c.as_str())
        })
        .collect();
    let values = row_values(src, "runs", &cols, src_id)?;
    let sets: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ?{}", i + 2))
        .collect();
    let mut params = vec![Value::Integer(dest_id)];
    params.extend(values);
    // Column names come from the schema itself (pragma_table_info), never from input.
    tx.execute(
        &format!("UPDATE runs SET {} WHERE id = ?1", sets.join(", ")),
        rusqlite::params_from_iter(params),
    )?;
    tx.execute("DELETE FROM epochs WHERE run_id = ?1", [dest_id])?;
    tx.execute("DELETE FROM weights WHERE run_id = ?1", [dest_id])?;
    tx.execute("DELETE FROM checkpoint_state WHERE run_id = ?1", [dest_id])?;
    tx.execute("DELETE FROM confusion WHERE run_id = ?1", [dest_id])?;
    tx.execute("DELETE FROM misclassified WHERE run_id = ?1", [dest_id])?;
    tx.execute("DELETE FROM epoch_classes WHERE run_id = ?1", [dest_id])?;
    copy_children(src, src_id, tx, dest_id)?;
    tx.execute(
        "UPDATE runs SET metrics_sha256 = ?2 WHERE id = ?1",
        params![dest_id, metrics_sha256(tx, dest_id)?],
    )?;
    Ok(())
}

/// A search's schedule and rungs from a source: new rows are added, a decision the output lacks is taken,
/// and two decisions of one rung must agree bit for bit (or are reported).
fn merge_rungs(tx: &Transaction<'_>, src: &Store, report: &mut MergeReport) -> Result<()> {
    let sconn = src.connection();
    if !has_column(sconn, "rung_members", "config_hash")? {
        return Ok(());
    }
    let search_cols = shared_columns(tx, sconn, "searches", &[])?;
    let searches: Vec<String> = sconn
        .prepare("SELECT search FROM searches ORDER BY search")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for search in searches {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM searches WHERE search = ?1)",
            [&search],
            |r| r.get(0),
        )?;
        if !exists {
            // Column names come from the schema itself; values are bound.
            let values: Vec<Value> = sconn.query_row(
                &format!(
                    "SELECT {} FROM searches WHERE search = ?1",
                    search_cols.join(", ")
                ),
                [&search],
                |r| {
                    (0..search_cols.len())
                        .map(|i| r.get::<_, Value>(i))
                        .collect()
                },
            )?;
            insert(tx, "searches", &search_cols, &[], values)?;
        }
    }
    type RungRow = (
        String,
        i64,
        i64,
        String,
        i64,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    /// value, place, promoted, decided.
    type Decision = (Option<f64>, Option<i64>, Option<i64>, bool);
    let rows: Vec<RungRow> = sconn
        .prepare(
            "SELECT search, bracket, rung, config_hash, epochs, value, place, promoted, decided_at
             FROM rung_members ORDER BY search, bracket, rung, config_hash",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (search, bracket, rung, hash, epochs, value, place, promoted, decided_at) in rows {
        let mine: Option<Decision> = tx
            .query_row(
                "SELECT value, place, promoted, decided_at IS NOT NULL FROM rung_members
                 WHERE search = ?1 AND bracket = ?2 AND rung = ?3 AND config_hash = ?4",
                params![search, bracket, rung, hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        match mine {
            None => {
                tx.execute(
                    "INSERT INTO rung_members (search, bracket, rung, config_hash, epochs, value, place,
                        promoted, decided_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![search, bracket, rung, hash, epochs, value, place, promoted, decided_at],
                )?;
            }
            Some((_, _, _, false)) if decided_at.is_some() => {
                tx.execute(
                    "UPDATE rung_members SET value = ?5, place = ?6, promoted = ?7, decided_at = ?8
                     WHERE search = ?1 AND bracket = ?2 AND rung = ?3 AND config_hash = ?4",
                    params![
                        search, bracket, rung, hash, value, place, promoted, decided_at
                    ],
                )?;
            }
            Some((v, p, pr, true)) if decided_at.is_some() => {
                if v.map(f64::to_bits) != value.map(f64::to_bits) || p != place || pr != promoted {
                    report.conflicts.push(format!(
                        "search {} bracket {bracket} rung {rung}, run of config {}: {} decided place {:?}, \
                         promoted {:?} (metric {:?}), the output place {p:?}, promoted {pr:?} (metric {v:?})",
                        &search[..search.len().min(12)],
                        &hash[..hash.len().min(12)],
                        src.path().display(),
                        place,
                        promoted,
                        value
                    ));
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Which copy of a run is further along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Further {
    Source,
    Output,
}

/// How two stored copies of one run compare.
#[derive(Debug, Clone, PartialEq)]
enum Difference {
    /// The same bits.
    None,
    /// One is the other trained further (a later rung of a search): every epoch both have, their initial
    /// weights and (at equal epochs) their last weights agree.
    Prefix(Further),
    /// Their bits differ: what differs first.
    Bits(String),
}

/// Compare two stored copies of a run by their bits: the initial weights (as hashed), every epoch both
/// hold, and the weights at the end of the shorter one where both have them.
fn first_difference(
    src: &Connection,
    src_id: i64,
    dest: &Connection,
    dest_id: i64,
) -> Result<Difference> {
    #[derive(Debug)]
    struct Copy {
        status: RunStatus,
        init: Option<String>,
        last: Option<String>,
    }
    let read_run = |conn: &Connection, id: i64| -> Result<Copy> {
        let (status, init, fin): (RunStatus, Option<String>, Option<String>) = conn.query_row(
            "SELECT status, init_weights_sha256, weights_sha256 FROM runs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let last = if status == RunStatus::Paused {
            weights_sha256(conn, id, WeightsKind::Checkpoint)?
        } else {
            weights_sha256(conn, id, WeightsKind::Final)?.or(fin)
        };
        Ok(Copy { status, init, last })
    };
    let (a, b) = (read_run(src, src_id)?, read_run(dest, dest_id)?);
    // The initial weights, by their stored hash (a run may keep only the hash) and by the stored bytes
    // where both stored them.
    if a.init != b.init {
        return Ok(Difference::Bits(format!(
            "initial weights: sha256 {} vs {}",
            a.init.as_deref().unwrap_or("(none)"),
            b.init.as_deref().unwrap_or("(none)")
        )));
    }
    if let (Some(x), Some(y)) = (
        weights_sha256(src, src_id, WeightsKind::Initial)?,
        weights_sha256(dest, dest_id, WeightsKind::Initial)?,
    ) && x != y
    {
        return Ok(Difference::Bits(format!(
            "initial weights: the stored bytes hash to {x} vs {y}"
        )));
    }
    let read = |conn: &Connection, id: i64| -> Result<Vec<[Option<f64>; 7]>> {
        let val = has_column(conn, "epochs", "val_loss")?;
        let sql = if val {
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc, val_loss, val_acc FROM epochs
             WHERE run_id = ?1 ORDER BY epoch"
        } else {
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc, NULL, NULL FROM epochs
             WHERE run_id = ?1 ORDER BY epoch"
        };
        Ok(conn
            .prepare(sql)?
            .query_map([id], |r| {
                Ok([
                    r.get::<_, i64>(0).map(|e| Some(e as f64))?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ])
            })?
            .collect::<rusqlite::Result<_>>()?)
    };
    let (ea, eb) = (read(src, src_id)?, read(dest, dest_id)?);
    let names = [
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "val_loss",
        "val_acc",
    ];
    for (ra, rb) in ea.iter().zip(&eb) {
        for (k, (x, y)) in ra.iter().zip(rb).enumerate() {
            if x.map(f64::to_bits) != y.map(f64::to_bits) {
                let shown = |v: &Option<f64>| v.map_or("NULL (NaN)".to_string(), |v| v.to_string());
                return Ok(Difference::Bits(format!(
                    "epoch {}, {}: {} vs {}",
                    ra[0].unwrap_or(0.0),
                    names[k],
                    shown(x),
                    shown(y)
                )));
            }
        }
    }
    // Runs of a search may hold more epochs in one copy than in the other; any other run must have the
    // same epochs and the same final weights.
    let in_search = |s: RunStatus| {
        matches!(
            s,
            RunStatus::Paused | RunStatus::Pruned | RunStatus::Completed
        )
    };
    // A pruned copy ended: it cannot be the shorter of two.
    let pruned_early = (a.status == RunStatus::Pruned && ea.len() < eb.len())
        || (b.status == RunStatus::Pruned && eb.len() < ea.len());
    if ea.len() != eb.len() || a.status != b.status {
        if !(in_search(a.status) && in_search(b.status)) || pruned_early {
            return Ok(Difference::Bits(format!(
                "{} epochs ({}) vs {} ({})",
                ea.len(),
                a.status,
                eb.len(),
                b.status
            )));
        }
        if ea.len() == eb.len() && a.last != b.last {
            return Ok(Difference::Bits(format!(
                "the weights after epoch {}: sha256 {} vs {}",
                ea.len(),
                a.last.as_deref().unwrap_or("(none)"),
                b.last.as_deref().unwrap_or("(none)")
            )));
        }
        // Further along: more epochs, or as many and finished (pruned or completed) where the other waits.
        let src_further =
            ea.len() > eb.len() || (ea.len() == eb.len() && b.status == RunStatus::Paused);
        return Ok(Difference::Prefix(if src_further {
            Further::Source
        } else {
            Further::Output
        }));
    }
    if a.last != b.last {
        return Ok(Difference::Bits(format!(
            "{} weights: sha256 {} vs {}",
            if a.status == RunStatus::Paused {
                "checkpoint"
            } else {
                "final"
            },
            a.last.as_deref().unwrap_or("(none)"),
            b.last.as_deref().unwrap_or("(none)")
        )));
    }
    Ok(Difference::None)
}
