//! The queries behind the dashboard (`runner ui`, `runner report`; the report layer's `ui::api` shapes
//! their answers as JSON): a fingerprint of the store for live pages, the experiments with their runs by
//! status and their best runs, the runs list written as JSON as SQLite yields it, one run's columns, and an
//! experiment's finished runs and epochs. Reads only, with bound parameters and bounded results; an older
//! store (read as it is) is read through its own columns.

use rusqlite::types::Value;
use serde_json::Value as Json;

use super::{RunStatus, Store, Table};
use crate::error::{Error, Result};

/// The result of `sql` as `{columns, rows}` JSON text, written cell by cell from SQLite's values (no table
/// in between), with typed cells (tags and sizes as lists): the runs list, the one answer that grows with
/// the store, stays fast.
fn query_compact_text(
    store: &Store,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    extra: &[(&str, Json)],
) -> Result<String> {
    use std::io::Write as _;

    use rusqlite::types::ValueRef;
    let run = || -> std::result::Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut stmt = store.connection().prepare(sql)?;
        let columns: Vec<String> = stmt.column_names().map(String::from).collect();
        let (tags, sizes) = (
            columns.iter().position(|c| c == "tags"),
            columns.iter().position(|c| c == "sizes"),
        );
        let mut out: Vec<u8> = Vec::with_capacity(1 << 21);
        out.extend_from_slice(b"{\"columns\":");
        serde_json::to_writer(&mut out, &columns)?;
        out.extend_from_slice(b",\"rows\":[");
        let mut rows = stmt.query(params)?;
        let mut first = true;
        while let Some(r) = rows.next()? {
            out.extend_from_slice(if first { b"[" } else { b",[" });
            first = false;
            for i in 0..columns.len() {
                if i > 0 {
                    out.push(b',');
                }
                match r.get_ref(i)? {
                    ValueRef::Null if Some(i) == tags => out.extend_from_slice(b"[]"),
                    ValueRef::Null => out.extend_from_slice(b"null"),
                    ValueRef::Integer(v) => write!(out, "{v}")?,
                    ValueRef::Real(v) if v.is_finite() => serde_json::to_writer(&mut out, &v)?,
                    ValueRef::Real(_) => out.extend_from_slice(b"null"),
                    ValueRef::Text(t) => {
                        let t = String::from_utf8_lossy(t);
                        if Some(i) == tags {
                            let list: Vec<&str> = t.split(',').filter(|x| !x.is_empty()).collect();
                            serde_json::to_writer(&mut out, &list)?;
                        } else if Some(i) == sizes {
                            // Parsed, never pasted: a stored text that is not a list of sizes stays a string.
                            match serde_json::from_str::<Vec<u64>>(&t) {
                                Ok(v) => serde_json::to_writer(&mut out, &v)?,
                                Err(_) => serde_json::to_writer(&mut out, &t)?,
                            }
                        } else {
                            // serde_json escapes every character JSON needs escaped.
                            serde_json::to_writer(&mut out, &t)?;
                        }
                    }
                    ValueRef::Blob(b) => {
                        serde_json::to_writer(&mut out, &format!("<{} bytes>", b.len()))?
                    }
                }
            }
            out.push(b']');
        }
        out.push(b']');
        for (k, v) in extra {
            out.push(b',');
            serde_json::to_writer(&mut out, k)?;
            out.push(b':');
            serde_json::to_writer(&mut out, v)?;
        }
        out.push(b'}');
        Ok(out)
    };
    let bytes = run().map_err(|e| store.store_err(format!("cannot list its runs: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|e| Error::internal(format!("the runs list is not UTF-8: {e}")))
}

impl Store {
    /// A fingerprint of what the dashboard shows, the same from every connection (so not SQLite's
    /// per-connection `data_version`): it changes when a run is added, changes status, stores an epoch,
    /// beats its heartbeat, is deleted or annotated, or a rung is decided. Columns: the fingerprint, the
    /// runs, the running runs.
    pub fn dashboard_version(&self) -> Result<Table> {
        let tags = if self.manages_runs() {
            "(SELECT count(*) FROM tags) || '-' || total(length(note)) || '-' || count(deleted_at)"
        } else {
            "''"
        };
        let rungs = if self.version() >= 4 {
            "(SELECT count(decided_at) FROM rung_members)"
        } else {
            "0"
        };
        self.select(
            &format!(
                "SELECT count(*) || '-' || max(id) || '-' || total(epochs_done) || '-' || total(length(status) * id)
                        || '-' || coalesce(max(heartbeat_at), 0) || '-' || {tags} || '-' || {rungs},
                        count(*), sum(status = 'running')
                 FROM runs"
            ),
            &[],
        )
    }

    /// Each experiment with current runs, the one with the newest run first: its name, latest
    /// description, runs, their summed time, first creation.
    pub fn experiment_overview(&self) -> Result<Table> {
        let (members, current) = (self.members(), self.current("r"));
        self.select(
            &format!(
                "SELECT m.experiment,
                        (SELECT description FROM experiments x WHERE x.name = m.experiment ORDER BY x.id DESC LIMIT 1),
                        count(r.id), sum(r.seconds),
                        (SELECT min(created_at) FROM experiments x WHERE x.name = m.experiment)
                 FROM {members} m JOIN runs r ON r.id = m.run_id
                 WHERE {current} GROUP BY m.experiment ORDER BY max(r.id) DESC"
            ),
            &[],
        )
    }

    /// Each experiment's current runs counted by status: experiment, status, count.
    pub fn experiment_statuses(&self) -> Result<Table> {
        let (members, current) = (self.members(), self.current("r"));
        self.select(
            &format!(
                "SELECT m.experiment, r.status, count(*) FROM {members} m JOIN runs r ON r.id = m.run_id
                 WHERE {current} GROUP BY m.experiment, r.status ORDER BY m.experiment, r.status"
            ),
            &[],
        )
    }

    /// The best run of each experiment by its selection metric (the `best_runs` view; an older store, read
    /// as it is, by validation accuracy where there is one, else test accuracy): experiment, run id, the
    /// metric's name, its value, the run's test accuracy.
    pub fn experiment_bests(&self) -> Result<Table> {
        let sql = if self.version() >= 5 {
            "SELECT experiment, run_id, selected_by,
                    CASE selected_by WHEN 'val_acc' THEN val_acc WHEN 'val_loss' THEN val_loss
                                     WHEN 'test_loss' THEN test_loss ELSE test_acc END,
                    test_acc FROM best_runs"
                .to_string()
        } else {
            let (members, current) = (self.members(), self.current("r"));
            let val = self.col_of("r", "val_acc", 4);
            format!(
                "SELECT experiment, id, CASE WHEN v IS NULL THEN 'test_acc' ELSE 'val_acc' END,
                        coalesce(v, test_acc), test_acc FROM (
                    SELECT m.experiment, r.id, {val} AS v, r.test_acc, ROW_NUMBER() OVER (
                        PARTITION BY m.experiment ORDER BY coalesce({val}, r.test_acc) DESC, r.id) AS place
                    FROM {members} m JOIN runs r ON r.id = m.run_id
                    WHERE r.status = 'completed' AND {current}
                 ) WHERE place = 1"
            )
        };
        self.select(&sql, &[])
    }

    /// The newest `limit` runs with the columns of `run_summary_all` (one row per run and experiment) and,
    /// for a running run, `eta_seconds` (its epochs left at its mean epoch time), as `{columns, rows}` JSON
    /// text written as the rows come, with `extra` fields after them.
    pub fn runs_json(&self, limit: usize, extra: &[(&str, Json)]) -> Result<String> {
        let source = if self.manages_runs() {
            "run_summary_all"
        } else {
            "(SELECT *, NULL AS tags, NULL AS note, NULL AS deleted_at FROM run_summary)"
        };
        query_compact_text(
            self,
            &format!(
                "SELECT * FROM (
                    SELECT s.*, CASE WHEN s.status = 'running' AND s.epochs_done > 0
                        THEN (s.epochs - s.epochs_done) * s.seconds / s.epochs_done END AS eta_seconds
                    FROM {source} s ORDER BY s.run_id DESC LIMIT ?1
                 ) ORDER BY run_id"
            ),
            &[&(limit as i64)],
            extra,
        )
    }

    /// Every column of run `id`'s row.
    pub fn run_columns(&self, id: i64) -> Result<Table> {
        self.select("SELECT * FROM runs WHERE id = ?1", &[&id])
    }

    /// Does any run belong to the experiment `name`?
    pub fn has_experiment(&self, name: &str) -> Result<bool> {
        let t = self.select(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE experiment = ?1)",
                self.members()
            ),
            &[&name],
        )?;
        Ok(matches!(
            t.rows.first().and_then(|r| r.first()),
            Some(Value::Integer(1))
        ))
    }

    /// The latest description of experiment `name`.
    pub fn experiment_description(&self, name: &str) -> Result<String> {
        let t = self.select(
            "SELECT description FROM experiments WHERE name = ?1 ORDER BY id DESC LIMIT 1",
            &[&name],
        )?;
        Ok(match t.rows.first().and_then(|r| r.first()) {
            Some(Value::Text(d)) => d.clone(),
            _ => String::new(),
        })
    }

    /// The finished current runs of experiment `name`, oldest first: id, seed, status, test accuracy,
    /// validation accuracy, seed group, the values the experiment's sweep set, the config, finished_at,
    /// test loss, validation loss, epochs done.
    pub fn experiment_finished_runs(&self, name: &str) -> Result<Table> {
        let (members, current) = (self.members(), self.current("r"));
        let val = self.col_of("r", "val_acc", 4);
        let val_loss = self.col_of("r", "val_loss", 4);
        self.select(
            &format!(
                "SELECT r.id, r.seed, r.status, r.test_acc, {val}, r.seed_group, m.overrides, r.config_toml,
                        r.finished_at, r.test_loss, {val_loss}, r.epochs_done
                 FROM {members} m JOIN runs r ON r.id = m.run_id
                 WHERE m.experiment = ?1 AND r.status IN {} AND {current} ORDER BY r.id",
                RunStatus::sql_list(&RunStatus::FINISHED)
            ),
            &[&name],
        )
    }

    /// Every epoch of those runs, run by run: run id, test accuracy and loss, validation loss and accuracy.
    pub fn experiment_epochs(&self, name: &str) -> Result<Table> {
        let (members, current) = (self.members(), self.current("r"));
        let val_cols = if self.version() >= 4 {
            "e.val_loss, e.val_acc"
        } else {
            "NULL, NULL"
        };
        self.select(
            &format!(
                "SELECT e.run_id, e.test_acc, e.test_loss, {val_cols} FROM epochs e
                 WHERE e.run_id IN (SELECT r.id FROM {members} m JOIN runs r ON r.id = m.run_id
                                    WHERE m.experiment = ?1 AND r.status IN {} AND {current})
                 ORDER BY e.run_id, e.epoch",
                RunStatus::sql_list(&RunStatus::FINISHED)
            ),
            &[&name],
        )
    }
}
