//! Sharding a sweep across machines and merging their result stores.
//!
//! A run belongs to shard `hash(config) mod N`, so every machine computes the same partition. Each shard
//! writes its own SQLite file (SQLite must not be shared by writers over a network file system); `merge`
//! combines them: idempotent, provenance kept (every copied row keeps its host, pid, times and envelope),
//! and a run present in two stores must be bit-identical in both or it is reported, never overwritten.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use crate::error::{Error, Result};
use crate::store::Store;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Parse `I/N` with 0 <= I < N.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: I must be a number"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: N must be a number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "`{s}`: need 0 <= I < N (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a cluster scheduler assigned through the environment, and where it was read:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`) or
    /// Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`, of `MLP_RUNNER_SHARD_COUNT`).
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Option<(Shard, String)>, String> {
        let num = |k: &str| -> std::result::Result<Option<u64>, String> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| format!("{k}={v} is not a number"))
                })
                .transpose()
        };
        if let (Some(id), Some(count)) =
            (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id
                .checked_sub(min)
                .ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            let shard = Shard::parse(&format!("{index}/{count}"))?;
            let from = format!(
                "SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={count}"
            );
            return Ok(Some((shard, from)));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num("MLP_RUNNER_SHARD_COUNT")?.ok_or(
                "JOB_COMPLETION_INDEX is set but MLP_RUNNER_SHARD_COUNT is not: set it to the Job's completions",
            )?;
            let shard = Shard::parse(&format!("{index}/{count}"))?;
            return Ok(Some((
                shard,
                format!("JOB_COMPLETION_INDEX={index}, MLP_RUNNER_SHARD_COUNT={count}"),
            )));
        }
        Ok(None)
    }

    /// Does the run with this config hash belong to this shard? (First 64 bits of the hash, mod N.)
    pub fn contains(&self, config_hash: &str) -> bool {
        let prefix = config_hash.get(..16).unwrap_or("0");
        u64::from_str_radix(prefix, 16).unwrap_or(0) % self.count == self.index
    }
}

/// What a merge did.
#[derive(Debug, Clone, Default)]
pub struct MergeReport {
    pub experiments_added: usize,
    pub runs_added: usize,
    /// Runs already in the output with the same bits.
    pub runs_identical: usize,
    /// Runs not finished (pending, running, interrupted, failed) in their source: not copied.
    pub runs_unfinished: usize,
    /// Reproducibility failures: the same config stored with different bits.
    pub conflicts: Vec<String>,
}

const FINISHED: &str = "status IN ('completed', 'diverged')";

/// Columns of a table in the output database, except those listed.
fn columns(store: &Store, table: &str, except: &[&str]) -> Result<Vec<String>> {
    let t = store.query(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    Ok(t.rows
        .iter()
        .filter_map(|r| match &r[0] {
            rusqlite::types::Value::Text(s) if !except.contains(&s.as_str()) => Some(s.clone()),
            _ => None,
        })
        .collect())
}

/// Merge the finished runs of `sources` into the store at `out` (created if needed).
pub fn merge(sources: &[&Path], out: &Path) -> Result<MergeReport> {
    let dest = Store::open(out)?;
    let mut report = MergeReport::default();
    let run_cols = columns(&dest, "runs", &["id", "experiment_id"])?;
    let exp_cols = columns(&dest, "experiments", &["id"])?;
    for src in sources {
        // Checks the file (exists, SQLite, schema version) with a clear error before attaching it.
        drop(Store::open_read_only(src)?);
        if std::fs::canonicalize(src).ok() == std::fs::canonicalize(out).ok() {
            return Err(Error::Usage(format!(
                "{} is the output itself; merge other files into it",
                src.display()
            )));
        }
        let conn = dest.connection();
        conn.execute("ATTACH DATABASE ?1 AS src", [src.to_string_lossy()])?;
        let result = merge_one(
            conn,
            &src.display().to_string(),
            &run_cols,
            &exp_cols,
            &mut report,
        );
        conn.execute("DETACH DATABASE src", [])?;
        result?;
    }
    Ok(report)
}

fn merge_one(
    conn: &rusqlite::Connection,
    src_name: &str,
    run_cols: &[String],
    exp_cols: &[String],
    report: &mut MergeReport,
) -> Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    report.runs_unfinished += tx.query_row(
        &format!("SELECT count(*) FROM src.runs WHERE NOT {FINISHED}"),
        [],
        |r| r.get::<_, i64>(0),
    )? as usize;
    let src_runs: Vec<(i64, i64, String, String, Option<String>, String)> = tx
        .prepare(&format!(
            "SELECT id, experiment_id, config_hash, name, weights_sha256, coalesce(host, '') FROM src.runs WHERE {FINISHED} ORDER BY id"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let exp_list = exp_cols.join(", ");
    let run_list = run_cols.join(", ");
    for (src_id, src_exp, hash, name, weights, host) in src_runs {
        let existing: Option<(i64, Option<String>, String)> = tx
            .query_row(
                &format!(
                    "SELECT id, weights_sha256, coalesce(host, '') FROM main.runs WHERE config_hash = ?1 AND {FINISHED}
                     ORDER BY id LIMIT 1"
                ),
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((dest_id, dest_weights, dest_host)) = existing {
            match first_difference(&tx, src_id, dest_id, &weights, &dest_weights)? {
                None => report.runs_identical += 1,
                Some(diff) => report.conflicts.push(format!(
                    "run {name} (config {}): run {src_id} of {src_name} (host {host}) and run {dest_id} of the \
                     output (host {dest_host}) differ: {diff}",
                    &hash[..12]
                )),
            }
            continue;
        }
        // The experiment row: the same invocation (name, spec text, time) maps to one row.
        let dest_exp: Option<i64> = tx
            .query_row(
                "SELECT m.id FROM main.experiments m, src.experiments e WHERE e.id = ?1
                 AND m.name = e.name AND m.spec_toml = e.spec_toml AND m.created_at = e.created_at",
                [src_exp],
                |r| r.get(0),
            )
            .optional()?;
        let dest_exp = match dest_exp {
            Some(id) => id,
            None => {
                tx.execute(
                    &format!("INSERT INTO main.experiments ({exp_list}) SELECT {exp_list} FROM src.experiments WHERE id = ?1"),
                    [src_exp],
                )?;
                report.experiments_added += 1;
                tx.last_insert_rowid()
            }
        };
        tx.execute(
            &format!(
                "INSERT INTO main.runs (experiment_id, {run_list}) SELECT ?2, {run_list} FROM src.runs WHERE id = ?1"
            ),
            params![src_id, dest_exp],
        )?;
        let new_id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO main.epochs SELECT ?2, epoch, train_loss, train_acc, test_loss, test_acc, seconds,
                train_seconds FROM src.epochs WHERE run_id = ?1",
            params![src_id, new_id],
        )?;
        tx.execute(
            "INSERT INTO main.weights SELECT ?2, kind, epoch, layer, param, shape, dtype, data
             FROM src.weights WHERE run_id = ?1 AND kind != 'checkpoint'",
            params![src_id, new_id],
        )?;
        report.runs_added += 1;
    }
    tx.commit()?;
    Ok(())
}

/// Compare two stored copies of a run: the weights hash, then every epoch's metrics bit for bit.
fn first_difference(
    tx: &rusqlite::Transaction<'_>,
    src_id: i64,
    dest_id: i64,
    src_weights: &Option<String>,
    dest_weights: &Option<String>,
) -> Result<Option<String>> {
    if src_weights != dest_weights {
        return Ok(Some(format!(
            "final weights sha256 {} vs {}",
            src_weights.as_deref().unwrap_or("(none)"),
            dest_weights.as_deref().unwrap_or("(none)")
        )));
    }
    let read = |schema: &str, id: i64| -> rusqlite::Result<Vec<[Option<f64>; 5]>> {
        tx.prepare(&format!(
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc FROM {schema}.epochs WHERE run_id = ?1 ORDER BY epoch"
        ))?
        .query_map([id], |r| {
            Ok([r.get::<_, i64>(0).map(|e| Some(e as f64))?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
        })?
        .collect()
    };
    let (a, b) = (read("src", src_id)?, read("main", dest_id)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!(Shard::parse("1/3"), Ok(Shard { index: 1, count: 3 }));
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("x").is_err());
        use sha2::Digest;
        let hashes: Vec<String> = (0..300i32)
            .map(|i| crate::data::hex(&sha2::Sha256::digest(i.to_le_bytes())))
            .collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for h in &hashes {
            assert_eq!(shards.iter().filter(|s| s.contains(h)).count(), 1);
        }
        assert!(
            shards
                .iter()
                .all(|s| hashes.iter().filter(|h| s.contains(h)).count() > 50)
        );
    }

    #[test]
    fn shards_come_from_the_scheduler_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]));
        assert_eq!(slurm.unwrap().unwrap().0, Shard { index: 2, count: 4 });
        let k8s = Shard::from_env(env(&[
            ("JOB_COMPLETION_INDEX", "0"),
            ("MLP_RUNNER_SHARD_COUNT", "2"),
        ]));
        assert_eq!(k8s.unwrap().unwrap().0, Shard { index: 0, count: 2 });
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        assert_eq!(Shard::from_env(env(&[])), Ok(None));
    }
}
