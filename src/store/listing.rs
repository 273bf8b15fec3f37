//! The listing `ls` prints: one row per run and experiment it belongs to, with the columns of
//! `run_summary`, filtered by experiment, status, tag and a user's condition (read under
//! [`Store::select_user`]'s authorizer), sorted and limited. Column names in the sort come from the
//! listing's own columns, checked by the caller; values are bound.

use std::time::Duration;

use rusqlite::types::Value;

use super::{RunStatus, Store, Table};
use crate::error::Result;

/// Which hidden runs (deleted with `rm`, superseded by a later attempt) a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// None: the current runs.
    Not,
    /// The deleted runs only.
    Only,
    /// Every run, deleted and superseded ones too (with their `deleted_at` and `superseded_by`).
    Too,
}

/// What `ls` asks for.
#[derive(Debug, Clone)]
pub struct Listing<'a> {
    pub experiment: Option<&'a str>,
    pub status: Option<RunStatus>,
    pub tag: Option<&'a str>,
    /// An SQL condition a user typed, on the listing's columns.
    pub condition: Option<&'a str>,
    /// Columns to sort by (each one of [`Store::listing_columns`]), descending when `true`; then run id.
    pub order: &'a [(String, bool)],
    pub limit: Option<u64>,
    pub hidden: Hidden,
    /// Epochs as one `done/total` text column (for a text table), else two numbers.
    pub epochs_as_text: bool,
    /// The longest the user's condition may run.
    pub time_limit: Duration,
}

impl Store {
    /// Where a listing reads from: every run with the columns of `run_summary` (deleted ones too, told by
    /// `deleted_at`); for a store older than version 3, `run_summary` with those columns empty.
    fn listing_source(&self) -> &'static str {
        if self.manages_runs() {
            "run_summary_all"
        } else {
            "(SELECT *, NULL AS tags, NULL AS note, NULL AS deleted_at FROM run_summary)"
        }
    }

    /// The columns a listing's condition and sort may name.
    pub fn listing_columns(&self) -> Result<Vec<String>> {
        self.columns_of(&format!("SELECT * FROM {}", self.listing_source()))
    }

    /// The experiment names of this store, sorted.
    pub fn experiment_names(&self) -> Result<Vec<String>> {
        let t = self.select("SELECT DISTINCT name FROM experiments ORDER BY name", &[])?;
        Ok(t.rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(n)) => Some(n),
                _ => None,
            })
            .collect())
    }

    /// The runs `l` asks for.
    pub fn list_runs(&mut self, l: &Listing<'_>) -> Result<Table> {
        let source = self.listing_source();
        let columns = self.listing_columns()?;
        // Attempts a later one superseded (--force) are history: listed with the hidden ones.
        let versioned = columns.iter().any(|c| c == "superseded_by");
        let epochs = if l.epochs_as_text {
            "epochs_done || '/' || epochs AS epochs"
        } else {
            "epochs_done, epochs"
        };
        let hidden = match l.hidden {
            Hidden::Only => "deleted_at IS NOT NULL",
            Hidden::Too => "1",
            Hidden::Not if versioned => "deleted_at IS NULL AND superseded_by IS NULL",
            Hidden::Not => "deleted_at IS NULL",
        };
        let shown_hidden = match (l.hidden, versioned) {
            (Hidden::Too, true) => ", deleted_at, superseded_by",
            (Hidden::Too | Hidden::Only, _) => ", deleted_at",
            _ => "",
        };
        let val = if columns.iter().any(|c| c == "val_acc")
            && matches!(
                self.select(
                    &format!("SELECT EXISTS (SELECT 1 FROM {source} WHERE val_acc IS NOT NULL)"),
                    &[]
                )?
                .rows
                .first()
                .map(|r| &r[0]),
                Some(Value::Integer(1))
            ) {
            "val_acc, "
        } else {
            ""
        };
        let mut order: Vec<String> = l
            .order
            .iter()
            .filter(|(c, _)| columns.contains(c))
            .map(|(c, desc)| format!("{c} {} NULLS LAST", if *desc { "DESC" } else { "ASC" }))
            .collect();
        if !l.order.iter().any(|(c, _)| c == "run_id") {
            order.push("run_id ASC".into());
        }
        let tags = if self.manages_runs() {
            "EXISTS (SELECT 1 FROM tags t WHERE t.run_id = s.run_id AND t.tag = ?3)"
        } else {
            // A store without tags: no run has one.
            "0"
        };
        let condition = l.condition.unwrap_or("1");
        let sql = format!(
            "SELECT run_id, experiment, name, status, {epochs}, {val}test_acc, test_loss, round(seconds, 2) AS seconds,
                    tags, note{shown_hidden}
             FROM {source} s
             WHERE {hidden} AND (?1 IS NULL OR experiment = ?1) AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR {tags})
               AND ({condition})
             ORDER BY {} LIMIT ?4",
            order.join(", ")
        );
        let limit = l.limit.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        let status = l.status.map(|s| s.as_str());
        self.select_user(
            &sql,
            condition,
            &[&l.experiment, &status, &l.tag, &limit],
            l.time_limit,
        )
    }
}
