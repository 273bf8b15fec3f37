//! Merging result stores (e.g. one per shard of a sweep) into one.
//!
//! Every input is checked before anything is written: each is a store, none is the output, and every
//! finished run's stored bits match their hashes. The merge then happens in one transaction of the output
//! (or, for a new output, in a temporary file renamed into place at the end), so an interrupted or refused
//! merge leaves the output as it was. It is idempotent; provenance is kept (every copied row keeps its
//! host, pid, times and envelope); and a run present in two stores must be bit-identical in both (its
//! weights, hashed from the bytes, and every epoch's metrics), or it is reported, never overwritten.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::shard::Shard;
use crate::error::{Error, Result};
use crate::files::same_file;
use crate::store::integrity::{check_run, metrics_sha256, weights_sha256};
use crate::store::{RunStatus, Store, WeightsKind};

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
    /// Runs not finished (pending, running, interrupted, failed) in their source and finished in no
    /// input nor the output.
    pub unfinished: Vec<Unfinished>,
    /// Reproducibility failures: the same config stored with different bits.
    pub conflicts: Vec<String>,
    /// Runs the merged store does not hold finished: the sweep's (when it was given) and every run an
    /// input holds unfinished.
    pub missing: Vec<Missing>,
}

/// Merge the finished runs of `sources` into the store at `out` (created if needed), and say which runs
/// (of `expected`, and every run an input holds unfinished) the merged store still lacks.
pub fn merge(sources: &[&Path], out: &Path, expected: &Expected) -> Result<MergeReport> {
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
        let finished = store.run_ids(None, &RunStatus::FINISHED)?;
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
        merge_into(&dest, &inputs, expected)
    } else {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "merged.db".into());
        let tmp = out.with_file_name(format!(".{name}.merging-{}", std::process::id()));
        let result = (|| {
            let dest = Store::open(&tmp)?;
            let report = merge_into(&dest, &inputs, expected)?;
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

fn merge_into(dest: &Store, inputs: &[Store], expected: &Expected) -> Result<MergeReport> {
    let mut report = MergeReport::default();
    let tx = dest.write_tx()?;
    for src in inputs {
        let r = merge_one(&tx, src, &mut report);
        r.map_err(|e| e.on_file(src.path()))?;
    }
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
    for (name, hash) in &expected.runs {
        if !finished(hash)? && seen.insert(hash.clone()) {
            missing.push(Missing {
                name: name.clone(),
                config_hash: hash.clone(),
                shard: shard_of(hash),
                state: "in no input".into(),
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

fn merge_one(tx: &Transaction<'_>, src: &Store, report: &mut MergeReport) -> Result<()> {
    let sconn = src.connection();
    let run_cols = shared_columns(tx, sconn, "runs", &["id", "experiment_id"])?;
    let exp_cols = shared_columns(tx, sconn, "experiments", &["id"])?;
    let runs: Vec<(i64, i64, String, String, RunStatus)> = sconn
        .prepare("SELECT id, experiment_id, config_hash, name, status FROM runs ORDER BY id")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (src_id, src_exp, hash, name, status) in runs {
        if !status.is_finished() {
            report.unfinished.push(Unfinished {
                source: src.path().to_path_buf(),
                run_id: src_id,
                name,
                status,
                config_hash: hash,
            });
            continue;
        }
        let existing: Option<(i64, String)> = tx
            .query_row(
                &format!(
                    "SELECT id, coalesce(host, '') FROM runs WHERE config_hash = ?1 AND status IN {}
                     ORDER BY id LIMIT 1",
                    RunStatus::sql_list(&RunStatus::FINISHED)
                ),
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((dest_id, dest_host)) = existing {
            match first_difference(sconn, src_id, tx, dest_id)? {
                None => report.runs_identical += 1,
                Some(diff) => {
                    let host: String = sconn.query_row(
                        "SELECT coalesce(host, '') FROM runs WHERE id = ?1",
                        [src_id],
                        |r| r.get(0),
                    )?;
                    report.conflicts.push(format!(
                        "run {} (config {}): run {src_id} of {} (host {}) and run {dest_id} of the output (host \
                         {}) differ: {diff}",
                        crate::text::clean(&name),
                        &hash[..hash.len().min(12)],
                        src.path().display(),
                        crate::text::clean(&host),
                        crate::text::clean(&dest_host)
                    ))
                }
            }
            continue;
        }
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
        // A source of an older schema has no epoch hash: the output's is computed from the copied rows.
        tx.execute(
            "UPDATE runs SET metrics_sha256 = ?2 WHERE id = ?1",
            params![new_id, metrics_sha256(tx, new_id)?],
        )?;
        report.runs_added += 1;
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

/// Copy a run's epochs and its initial and final weights (not a checkpoint) under its new id.
fn copy_children(src: &Connection, src_id: i64, tx: &Transaction<'_>, new_id: i64) -> Result<()> {
    for (columns, table, filter) in [
        (
            "epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds",
            "epochs",
            "",
        ),
        (
            "kind, epoch, layer, param, shape, dtype, data",
            "weights",
            "AND kind != 'checkpoint'",
        ),
    ] {
        // Table and column names are the fixed lists above; values are bound.
        let mut read = src.prepare(&format!(
            "SELECT {columns} FROM {table} WHERE run_id = ?1 {filter}"
        ))?;
        let mut write = tx.prepare(&format!(
            "INSERT INTO {table} (run_id, {columns}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?;
        let mut rows = read.query([src_id])?;
        while let Some(r) = rows.next()? {
            let mut values = vec![Value::Integer(new_id)];
            for i in 0..7 {
                values.push(r.get(i)?);
            }
            write.execute(rusqlite::params_from_iter(values))?;
        }
    }
    Ok(())
}

/// Compare two stored copies of a run by their bits: the initial and final weights as hashed from the
/// stored bytes, then every epoch's metrics.
fn first_difference(
    src: &Connection,
    src_id: i64,
    dest: &Connection,
    dest_id: i64,
) -> Result<Option<String>> {
    for kind in [WeightsKind::Initial, WeightsKind::Final] {
        let (a, b) = (
            weights_sha256(src, src_id, kind)?,
            weights_sha256(dest, dest_id, kind)?,
        );
        if a != b {
            return Ok(Some(format!(
                "{} weights: the stored bytes hash to {} vs {}",
                kind.as_str(),
                a.as_deref().unwrap_or("(none)"),
                b.as_deref().unwrap_or("(none)")
            )));
        }
    }
    let read = |conn: &Connection, id: i64| -> rusqlite::Result<Vec<[Option<f64>; 5]>> {
        conn.prepare(
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc FROM epochs WHERE run_id = ?1 ORDER BY epoch",
        )?
        .query_map([id], |r| {
            Ok([r.get::<_, i64>(0).map(|e| Some(e as f64))?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
        })?
        .collect()
    };
    let (a, b) = (read(src, src_id)?, read(dest, dest_id)?);
    if a.len() != b.len() {
        return Ok(Some(format!("{} epochs vs {}", a.len(), b.len())));
    }
    let names = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"];
    for (ra, rb) in a.iter().zip(&b) {
        for (k, (x, y)) in ra.iter().zip(rb).enumerate() {
            if x.map(f64::to_bits) != y.map(f64::to_bits) {
                return Ok(Some(format!(
                    "epoch {}, {}: {x:?} vs {y:?}",
                    ra[0].unwrap_or(0.0),
                    names[k]
                )));
            }
        }
    }
    Ok(None)
}
