//! Reads: a run's row, its epochs, its weights (checked against their hashes), lists of runs, and
//! arbitrary read-only SQL. Every value from the user is a bound parameter.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};

use super::integrity::read_snapshot;
use super::{RunStatus, Store, WeightsKind};
use crate::core::config::RunConfig;
use crate::core::envelope::{BIT_FIELDS, TrainedWith};
use crate::core::model::Snapshot;
use crate::core::train::EpochMetrics;
use crate::error::{Error, Result};

/// A run's row, as far as the tool itself needs it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub experiment_id: i64,
    pub experiment: String,
    pub name: String,
    pub status: RunStatus,
    pub config_toml: String,
    pub config_hash: String,
    pub epochs_done: i64,
    pub test_acc: Option<f64>,
    pub diverged_epoch: Option<i64>,
    pub dataset_sha256: Option<String>,
    pub weights_sha256: Option<String>,
    pub init_weights_sha256: Option<String>,
    /// The data folder as an absolute path where the run was trained (schema 5).
    pub data_path: Option<String>,
    /// The result fingerprint (schema 5; a finished run).
    pub result_sha256: Option<String>,
    /// The envelope fields that can change the bits ([`BIT_FIELDS`]), by name, as text (`None`: NULL).
    pub envelope: BTreeMap<&'static str, Option<String>>,
}

impl RunRow {
    /// The run's stored config, parsed and validated; a config that does not parse is a corrupt row.
    pub fn config(&self, store: &Store) -> Result<RunConfig> {
        RunConfig::from_toml(&self.config_toml).map_err(|e| {
            store.corrupt(format!(
                "run {}: its stored config does not parse: {e}",
                self.id
            ))
        })
    }

    /// What the run was trained with, by its envelope (kernel and elementary functions).
    pub fn trained_with(&self) -> TrainedWith {
        let field = |name: &str| self.envelope.get(name).cloned().flatten();
        TrainedWith {
            kernel: field("gemm_kernel"),
            math: field("math"),
        }
    }
}

/// A run's status and final metrics.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub id: i64,
    pub name: String,
    pub status: RunStatus,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub seconds: Option<f64>,
    /// Removed with `runner rm`.
    pub deleted: bool,
    pub epochs_done: i64,
}

/// The result of a read-only query: column names and rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }
}

impl Store {
    /// The error for a run id that is not in this store.
    pub(crate) fn missing_run(&self, id: i64) -> Error {
        let max: Option<i64> = self
            .connection()
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
            .ok()
            .flatten();
        Error::Usage(match max {
            Some(m) => format!(
                "no run with id {id} in {} (run ids go from 1 to {m}; see `runner ls`)",
                self.path().display()
            ),
            None => format!(
                "no run with id {id}: {} holds no runs yet",
                self.path().display()
            ),
        })
    }

    pub fn run(&self, id: i64) -> Result<RunRow> {
        self.at(self.run_inner(id))
    }

    fn run_inner(&self, id: i64) -> Result<RunRow> {
        let sql = format!(
            "SELECT r.id, r.experiment_id, e.name, r.name, r.status, r.config_toml, r.config_hash,
                r.epochs_done, r.test_acc, r.diverged_epoch, r.dataset_sha256, r.weights_sha256,
                r.init_weights_sha256, {}, {}, {}
             FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?1",
            self.col_of("r", "data_path", 5),
            self.col_of("r", "result_sha256", 5),
            BIT_FIELDS
                .iter()
                .map(|&c| {
                    // `math` is recorded from schema 7 on; a store read as it is may be older.
                    let since = if c == "math" { 7 } else { 1 };
                    format!("CAST({} AS TEXT)", self.col_of("r", c, since))
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.connection()
            .query_row(&sql, [id], |r| {
                let mut envelope = BTreeMap::new();
                for (i, c) in BIT_FIELDS.iter().enumerate() {
                    envelope.insert(*c, r.get::<_, Option<String>>(15 + i)?);
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
                    diverged_epoch: r.get(9)?,
                    dataset_sha256: r.get(10)?,
                    weights_sha256: r.get(11)?,
                    init_weights_sha256: r.get(12)?,
                    data_path: r.get(13)?,
                    result_sha256: r.get(14)?,
                    envelope,
                })
            })
            .optional()
            .map_err(|e| match e {
                rusqlite::Error::FromSqlConversionFailure(_, _, cause) => {
                    self.corrupt(format!("run {id}: {cause}"))
                }
                e => e.into(),
            })?
            .ok_or_else(|| self.missing_run(id))
    }

    /// Ids of the runs in any of `statuses` (all when empty), optionally of one experiment name only,
    /// oldest first; deleted runs (`runner rm`) and superseded attempts (`--force`) included.
    pub fn run_ids(&self, experiment: Option<&str>, statuses: &[RunStatus]) -> Result<Vec<i64>> {
        self.at(self.run_ids_inner(experiment, statuses, true))
    }

    /// [`Store::run_ids`] of the current runs only (not deleted, not superseded): what `ls`, `compare`,
    /// plots and `verify --all` see.
    pub fn live_run_ids(
        &self,
        experiment: Option<&str>,
        statuses: &[RunStatus],
    ) -> Result<Vec<i64>> {
        self.at(self.run_ids_inner(experiment, statuses, false))
    }

    fn run_ids_inner(
        &self,
        experiment: Option<&str>,
        statuses: &[RunStatus],
        hidden: bool,
    ) -> Result<Vec<i64>> {
        let mut stmt = self.connection().prepare(&format!(
            "SELECT r.id, r.status FROM runs r
             WHERE (?1 IS NULL OR r.id IN (SELECT m.run_id FROM {} m WHERE m.experiment = ?1))
               AND ({hidden} OR ({})) ORDER BY r.id",
            self.members(),
            self.current("r")
        ))?;
        let rows = stmt.query_map([experiment], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut ids = Vec::new();
        for row in rows {
            let (id, status) = row?;
            let keep = statuses.is_empty()
                || RunStatus::parse(&status).is_some_and(|s| statuses.contains(&s));
            if keep {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A run's epochs as a table for people (`show`, the dashboard): validation metrics when the run
    /// holds samples out.
    pub fn epoch_table(&self, run_id: i64) -> Result<Table> {
        let split = self.version() >= 4
            && matches!(
                self.select(
                    "SELECT validation IS NOT NULL FROM runs WHERE id = ?1",
                    &[&run_id]
                )?
                .rows
                .first()
                .map(|r| &r[0]),
                Some(Value::Integer(1))
            );
        let val = if split { "val_loss, val_acc, " } else { "" };
        // The learning rate of each epoch, when a schedule or warmup made it differ from the config's.
        let scheduled = self.version() >= 6
            && matches!(
                self.select(
                    "SELECT EXISTS (SELECT 1 FROM epochs e JOIN runs r ON r.id = e.run_id
                     WHERE e.run_id = ?1 AND e.learning_rate != r.learning_rate)",
                    &[&run_id]
                )?
                .rows
                .first()
                .map(|r| &r[0]),
                Some(Value::Integer(1))
            );
        let lr = if scheduled { "learning_rate, " } else { "" };
        self.select(
            &format!(
                "SELECT epoch, {lr}train_loss, train_acc, {val}test_loss, test_acc, seconds, train_seconds
                 FROM epochs WHERE run_id = ?1 ORDER BY epoch"
            ),
            &[&run_id],
        )
    }

    /// A run's stored weights as a table (kind, epoch, layer, param, shape, dtype, bytes), not their data.
    pub fn weight_table(&self, run_id: i64) -> Result<Table> {
        self.select(
            "SELECT kind, epoch, layer, param, shape, dtype, length(data) AS bytes FROM weights
             WHERE run_id = ?1 ORDER BY kind = 'final', layer, param = 'bias'",
            &[&run_id],
        )
    }

    /// Each stored epoch's samples and correct predictions per class, by (epoch, split): empty for
    /// epochs stored before schema version 9.
    pub fn epoch_classes(
        &self,
        run_id: i64,
    ) -> Result<BTreeMap<(usize, String), crate::core::workspace::ClassCounts>> {
        let mut out: BTreeMap<(usize, String), crate::core::workspace::ClassCounts> =
            BTreeMap::new();
        if self.version() < 9 {
            return Ok(out);
        }
        let t = self.select(
            "SELECT epoch, split, class, samples, correct FROM epoch_classes WHERE run_id = ?1
             ORDER BY epoch, split, class",
            &[&run_id],
        )?;
        for r in &t.rows {
            let int = |v: &Value| match v {
                Value::Integer(i) => u64::try_from(*i).unwrap_or(0),
                _ => 0,
            };
            let (Value::Text(split), class) = (&r[1], int(&r[2]) as usize) else {
                continue;
            };
            let counts = out.entry((int(&r[0]) as usize, split.clone())).or_default();
            if counts.len() <= class {
                counts.resize(class + 1, [0, 0]);
            }
            counts[class] = [int(&r[3]), int(&r[4])];
        }
        Ok(out)
    }

    /// Where run `run_id`'s final weights err, as stored when it completed (`classes` outputs): `None`
    /// when nothing is stored (a run not completed, or completed before schema version 8).
    pub fn run_errors(
        &self,
        run_id: i64,
        classes: usize,
    ) -> Result<Option<crate::core::confusion::Errors>> {
        use crate::core::confusion::{Confusion, Errors, Miss};
        if self.version() < 8 {
            return Ok(None);
        }
        let cells = self.select(
            "SELECT split, actual, predicted, count FROM confusion WHERE run_id = ?1",
            &[&run_id],
        )?;
        if cells.rows.is_empty() {
            return Ok(None);
        }
        let int = |v: &Value| match v {
            Value::Integer(i) => usize::try_from(*i).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        let (mut test, mut validation) = (
            Confusion {
                classes,
                counts: vec![0; classes * classes],
            },
            None::<Confusion>,
        );
        for r in &cells.rows {
            let (a, p, n) = (int(&r[1]), int(&r[2]), int(&r[3]) as u64);
            if a >= classes || p >= classes {
                return Err(Error::Corrupt {
                    path: self.path().to_path_buf(),
                    msg: format!(
                        "run {run_id}: a confusion cell ({a}, {p}) outside its {classes} classes"
                    ),
                });
            }
            let m = match &r[0] {
                Value::Text(t) if t == "validation" => {
                    validation.get_or_insert_with(|| Confusion {
                        classes,
                        counts: vec![0; classes * classes],
                    })
                }
                _ => &mut test,
            };
            m.counts[a * classes + p] = n;
        }
        let misses = self.select(
            "SELECT sample, actual, predicted, confidence FROM misclassified WHERE run_id = ?1
             ORDER BY sample",
            &[&run_id],
        )?;
        let misclassified = misses
            .rows
            .iter()
            .map(|r| Miss {
                sample: int(&r[0]),
                actual: int(&r[1]).min(255) as u8,
                predicted: int(&r[2]).min(255) as u8,
                confidence: match r[3] {
                    Value::Real(f) => f,
                    _ => f64::NAN,
                },
            })
            .collect();
        Ok(Some(Errors {
            test,
            validation,
            misclassified,
        }))
    }

    /// How many epochs a run has stored.
    pub fn epochs_done(&self, run_id: i64) -> Result<usize> {
        let n: i64 = self.at(self
            .connection()
            .query_row(
                "SELECT epochs_done FROM runs WHERE id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .map_err(Error::from))?;
        Ok(n.max(0) as usize)
    }

    /// A run's stored epochs, in order. A NULL loss (how SQLite stores a NaN) reads as NaN.
    pub fn epochs(&self, run_id: i64) -> Result<Vec<EpochMetrics>> {
        self.at(self.epochs_inner(run_id))
    }

    fn epochs_inner(&self, run_id: i64) -> Result<Vec<EpochMetrics>> {
        let mut stmt = self.connection().prepare(&format!(
            "SELECT epoch, train_loss, train_acc, test_loss, test_acc, train_seconds, seconds, {}, {}, {}
             FROM epochs WHERE run_id = ?1 ORDER BY epoch",
            self.col("val_loss", 4),
            self.col("val_acc", 4),
            self.col("learning_rate", 6)
        ))?;
        let rows = stmt.query_map([run_id], |r| {
            let val_acc: Option<f64> = r.get(8)?;
            Ok(EpochMetrics {
                epoch: r.get::<_, i64>(0)?.max(0) as usize,
                train_loss: r.get::<_, Option<f64>>(1)?.unwrap_or(f64::NAN),
                train_acc: r.get(2)?,
                test_loss: r.get::<_, Option<f64>>(3)?.unwrap_or(f64::NAN),
                test_acc: r.get(4)?,
                train_seconds: r.get(5)?,
                seconds: r.get(6)?,
                // With a split, accuracy is always stored; a NULL loss beside it is a NaN.
                val_loss: val_acc.map(|_| {
                    r.get::<_, Option<f64>>(7)
                        .ok()
                        .flatten()
                        .unwrap_or(f64::NAN)
                }),
                val_acc,
                learning_rate: r.get(9)?,
                // Read with `epoch_classes` where wanted.
                test_classes: None,
                val_classes: None,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A run's stored weights of one kind, checked: their bytes hash to the run's stored hash for that
    /// kind and form an MLP; anything else is a corrupt-store error naming the run. `None` if the run has
    /// no weights of that kind.
    pub fn weights(&self, run_id: i64, kind: WeightsKind) -> Result<Option<Snapshot>> {
        self.at(self.weights_inner(run_id, kind))
    }

    fn weights_inner(&self, run_id: i64, kind: WeightsKind) -> Result<Option<Snapshot>> {
        let column = match kind {
            WeightsKind::Checkpoint => self.col("checkpoint_sha256", 2),
            k => k.hash_column(),
        };
        let expected: Option<String> = self
            .connection()
            .query_row(
                &format!("SELECT {column} FROM runs WHERE id = ?1"),
                [run_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| self.missing_run(run_id))?;
        // A schema-1 checkpoint has no hash; every other kind must have one.
        let checked = !(kind == WeightsKind::Checkpoint && self.version() < 2);
        if checked && expected.is_none() {
            let any: bool = self.connection().query_row(
                "SELECT EXISTS (SELECT 1 FROM weights WHERE run_id = ?1 AND kind = ?2)",
                params![run_id, kind.as_str()],
                |r| r.get(0),
            )?;
            if any {
                return Err(self.corrupt(format!(
                    "run {run_id}, {} weights have no stored hash",
                    kind.as_str()
                )));
            }
        }
        match read_snapshot(self.connection(), run_id, kind, expected.as_deref())? {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(s)),
            Some(Err(e)) => Err(self.corrupt(format!("run {run_id}, {e}"))),
        }
    }

    /// A run's initial weights: the stored ones (checked against their hash), or, for a run that keeps
    /// only their hash (the default), drawn again from its config and checked against that hash. A
    /// regeneration that does not match says so (this build draws other initial weights than the one that
    /// trained the run). `None` if the run has not started.
    pub fn initial_weights(&self, run_id: i64) -> Result<Option<Snapshot>> {
        if let Some(s) = self.weights(run_id, WeightsKind::Initial)? {
            return Ok(Some(s));
        }
        let row = self.run(run_id)?;
        let Some(stored) = row.init_weights_sha256.clone() else {
            return Ok(None);
        };
        let params =
            crate::core::model::initial_snapshot(&row.config(self)?, row.trained_with().math());
        let now = params.sha256();
        // The stored hash is covered by the result fingerprint: an edited one is a corrupt store, not
        // another build.
        if now != stored
            && row.result_sha256.is_some()
            && super::integrity::result_sha256(self.connection(), run_id)? != row.result_sha256
        {
            return Err(self.corrupt(format!(
                "run {run_id}: its initial weights' hash {stored} does not match its result fingerprint \
                 (the hash was edited); `runner check` lists every problem"
            )));
        }
        if now != stored {
            return Err(Error::Usage(format!(
                "run {run_id}'s initial weights are kept as their hash only, and drawing them again from its \
                 config gives other weights (sha256 {now}, stored {stored}): this build of runner initialises \
                 differently from the one that trained the run ({}); use that build",
                row.envelope
                    .get("crate_version")
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "unknown version".into())
            )));
        }
        Ok(Some(params))
    }

    /// The run of experiment `experiment` with this config hash (its latest attempt), summarised for a
    /// report; the latest row of the config when the experiment has none.
    pub(crate) fn latest_summary(
        &self,
        experiment: &str,
        config_hash: &str,
    ) -> Result<Option<RunSummary>> {
        let row = self.connection().query_row(
            &format!(
                "SELECT r.id, coalesce(m.name, r.name), r.status, r.test_acc, r.test_loss, r.seconds,
                    {} IS NOT NULL, r.epochs_done
                 FROM runs r LEFT JOIN {} m ON m.run_id = r.id AND m.experiment = ?2
                 WHERE r.config_hash = ?1 ORDER BY m.run_id IS NOT NULL DESC, r.id DESC LIMIT 1",
                self.col_of("r", "deleted_at", 3),
                self.members()
            ),
            params![config_hash, experiment],
            |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    test_acc: r.get(3)?,
                    test_loss: r.get(4)?,
                    seconds: r.get(5)?,
                    deleted: r.get(6)?,
                    epochs_done: r.get(7)?,
                })
            },
        );
        self.at(row.optional().map_err(Error::from))
    }

    /// Is there a run named `name` (its name where it was first queued)?
    pub fn has_run_named(&self, name: &str) -> Result<bool> {
        Ok(!self
            .select("SELECT 1 FROM runs WHERE name = ?1 LIMIT 1", &[&name])?
            .rows
            .is_empty())
    }

    /// How many runs the store holds, and the share of their epochs' time spent evaluating (outside the
    /// SGD steps).
    pub fn evaluation_share(&self) -> Result<Table> {
        self.select(
            "SELECT (SELECT count(*) FROM runs), sum(seconds - train_seconds) / sum(seconds) FROM epochs",
            &[],
        )
    }

    /// A run's name, validation and test accuracy, and epochs, for a one-line report.
    pub fn run_figures(&self, id: i64) -> Result<Table> {
        self.select(
            &format!(
                "SELECT name, {}, test_acc, epochs_done FROM runs WHERE id = ?1",
                self.col("val_acc", 4)
            ),
            &[&id],
        )
    }

    /// Columns of run `id` (`fields`: names from a fixed list of the caller's, never input), each as text.
    pub fn run_fields_as_text(&self, id: i64, fields: &[&str]) -> Result<Table> {
        // A store read as it is may predate a column (`math`: schema 7): NULL there.
        let mut cols = Vec::with_capacity(fields.len());
        for c in fields {
            let present = super::integrity::has_column(self.connection(), "runs", c)?;
            cols.push(if present {
                format!("CAST({c} AS TEXT)")
            } else {
                "NULL".to_string()
            });
        }
        self.select(
            &format!("SELECT {} FROM runs WHERE id = ?1", cols.join(", ")),
            &[&id],
        )
    }

    /// Names of the experiments with finished runs, the one with the newest finished run first.
    pub(crate) fn experiments_with_finished_runs(&self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT m.experiment FROM runs r JOIN {} m ON m.run_id = r.id
             WHERE r.status IN {} AND {} GROUP BY m.experiment ORDER BY max(r.id) DESC",
            self.members(),
            RunStatus::sql_list(&RunStatus::FINISHED),
            self.current("r")
        );
        let names = self
            .connection()
            .prepare(&sql)
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
        self.at(names.map_err(Error::from))
    }

    /// Run `sql` with bound `params` and collect the result (for the tool's own queries).
    pub(crate) fn select(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Table> {
        let run = || -> rusqlite::Result<Table> {
            let mut stmt = self.connection().prepare(sql)?;
            let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
            let n = columns.len();
            let rows = stmt
                .query_map(params, |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Table { columns, rows })
        };
        self.at(run().map_err(Error::from))
    }
}

impl Store {
    /// Run SQL that embeds a condition a user typed (`ls --where`) with bound `params`. The condition must
    /// be one expression ([`check_condition`]: balanced parentheses, no `;`, no comments), and while the
    /// statement is prepared an authorizer lets it read the `run_summary` views (and `tags`) only: no
    /// other table, no schema, no weights, no recursion, none of the functions that allocate at will. It
    /// runs read-only and is stopped after `time_limit`. SQLite's own message on an error.
    pub fn select_user(
        &mut self,
        sql: &str,
        condition: &str,
        params: &[&dyn rusqlite::ToSql],
        time_limit: std::time::Duration,
    ) -> Result<Table> {
        check_condition(condition)?;
        // SQLite's message alone (rusqlite's Display adds the whole statement).
        let sql_err = |e: rusqlite::Error| {
            Error::Usage(match e {
                rusqlite::Error::SqlInputError { msg, .. } => format!("SQL error: {msg}"),
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    format!(
                        "the condition ran longer than its time limit of {} s and was stopped; narrow it, \
                         or raise --timeout",
                        time_limit.as_secs_f64()
                    )
                }
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied =>
                {
                    "SQL error: the condition may read only the columns of run_summary (no other table, \
                     no recursion, no randomblob/zeroblob/printf); for anything else use runner sql"
                        .to_string()
                }
                rusqlite::Error::SqliteFailure(_, Some(msg)) => format!("SQL error: {msg}"),
                e => format!("SQL error: {e}"),
            })
        };
        self.conn
            .authorizer(Some(|ctx: rusqlite::hooks::AuthContext<'_>| {
                use rusqlite::hooks::{AuthAction, Authorization};
                const VIEWS: [&str; 2] = ["run_summary_all", "run_summary"];
                let in_view = ctx.accessor.is_some_and(|a| VIEWS.contains(&a));
                match ctx.action {
                    AuthAction::Select => Authorization::Allow,
                    // A read of no column of a table the views are made of is how SQLite counts a
                    // view's rows: it reads no data.
                    AuthAction::Read {
                        table_name,
                        column_name,
                    } if in_view
                        || VIEWS.contains(&table_name)
                        || table_name == "tags"
                        || (column_name.is_empty()
                            && ["runs", "members", "experiments"].contains(&table_name)) =>
                    {
                        Authorization::Allow
                    }
                    AuthAction::Function { function_name }
                        if ![
                            "randomblob",
                            "zeroblob",
                            "printf",
                            "format",
                            "load_extension",
                        ]
                        .contains(&function_name.to_ascii_lowercase().as_str()) =>
                    {
                        Authorization::Allow
                    }
                    _ => Authorization::Deny,
                }
            }))?;
        let started = std::time::Instant::now();
        self.conn
            .progress_handler(10_000, Some(move || started.elapsed() > time_limit))?;
        let result = (|| {
            let stmt = self.connection().prepare(sql).map_err(sql_err)?;
            if !stmt.readonly() {
                return Err(Error::Usage(
                    "SQL error: the clause would change the store; only read-only expressions are allowed"
                        .into(),
                ));
            }
            drop(stmt);
            self.select(sql, params).map_err(|e| match e {
                Error::Sqlite { error, .. } => sql_err(error),
                e => e,
            })
        })();
        self.conn.progress_handler(0, None::<fn() -> bool>)?;
        self.conn.authorizer(
            None::<fn(rusqlite::hooks::AuthContext<'_>) -> rusqlite::hooks::Authorization>,
        )?;
        result
    }

    /// The column names a query gives, without running it.
    pub fn columns_of(&self, sql: &str) -> Result<Vec<String>> {
        let stmt = self.at(self.connection().prepare(sql).map_err(Error::from))?;
        Ok(stmt.column_names().map(String::from).collect())
    }
}

/// What a streamed query hands its caller: first the column names, then each row.
pub enum QueryEvent<'a> {
    Columns(&'a [String]),
    Row(&'a [Value]),
}

/// SQL a user typed, run read-only (see [`Store::query_streaming`]).
pub struct UserQuery<'a> {
    pub sql: &'a str,
    /// Stop the query after this long.
    pub time_limit: Option<std::time::Duration>,
}

impl Store {
    /// Run a user's SQL on this (read-only) store, handing the column names and then each row to `on` as
    /// SQLite produces it: nothing is collected. A statement that could change a file (an
    /// `UPDATE`, `VACUUM INTO`, a `PRAGMA` that writes ...) is refused before it runs, by SQLite's own
    /// judgement (`sqlite3_stmt_readonly`), and so is `ATTACH`; a query running past its time limit is
    /// interrupted.
    pub fn query_streaming(
        &mut self,
        q: &UserQuery<'_>,
        on: &mut dyn FnMut(QueryEvent<'_>) -> Result<()>,
    ) -> Result<()> {
        if let Some(limit) = q.time_limit {
            let started = std::time::Instant::now();
            self.conn
                .progress_handler(10_000, Some(move || started.elapsed() > limit))?;
        }
        let result = self.stream(q, on);
        self.conn.progress_handler(0, None::<fn() -> bool>)?;
        result
    }

    fn stream(
        &self,
        q: &UserQuery<'_>,
        on: &mut dyn FnMut(QueryEvent<'_>) -> Result<()>,
    ) -> Result<()> {
        let conn = self.connection();
        let sql_err = |e: rusqlite::Error| Error::Usage(format!("SQL error: {e}"));
        let mut stmt = conn.prepare(q.sql).map_err(sql_err)?;
        if !stmt.readonly() || starts_with_word(q.sql, &["ATTACH", "DETACH"]) {
            return Err(Error::Usage(
                "SQL error: this statement would change the store or another file, or attach a database (the store is opened readonly): \
                 runner sql runs read-only queries only; use SELECT (or the sqlite3 shell on a copy)"
                    .into(),
            ));
        }
        let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        on(QueryEvent::Columns(&columns))?;
        let deadline = q.time_limit;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let mut values = Vec::with_capacity(columns.len());
        loop {
            let row = match rows.next() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    return Err(Error::Usage(format!(
                        "the query ran longer than its time limit of {} s and was stopped; raise \
                         --timeout or narrow the query",
                        deadline.map_or(0.0, |d| d.as_secs_f64())
                    )));
                }
                Err(e) => return Err(sql_err(e)),
            };
            values.clear();
            for i in 0..columns.len() {
                values.push(row.get::<_, Value>(i)?);
            }
            on(QueryEvent::Row(&values))?;
        }
    }
}

/// A condition a user typed must be one expression: parentheses that balance (outside quotes), and no `;`
/// or comment that could end it early or hide the rest of the statement.
pub fn check_condition(condition: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Usage(format!(
            "{why}: give one condition, e.g. \"test_acc > 0.97 AND learning_rate < 0.5\""
        )))
    };
    let mut depth = 0i64;
    let mut chars = condition.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                // A quoted string or name: a doubled quote inside it is the quote itself.
                loop {
                    match chars.next() {
                        Some(q) if q == c => {
                            if chars.peek() == Some(&c) {
                                chars.next();
                            } else {
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return bad("a quote is not closed"),
                    }
                }
            }
            '[' if !chars.by_ref().any(|x| x == ']') => return bad("a [ is not closed"),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return bad("a `)` closes more than the condition opened");
                }
            }
            ';' => return bad("a `;` would end the statement"),
            '-' if chars.peek() == Some(&'-') => return bad("comments (`--`) are not allowed"),
            '/' if chars.peek() == Some(&'*') => return bad("comments (`/*`) are not allowed"),
            _ => {}
        }
    }
    if depth != 0 {
        return bad("a `(` is not closed");
    }
    Ok(())
}

/// Does `sql` start (after blanks and comments) with one of `words`, case-insensitively?
fn starts_with_word(sql: &str, words: &[&str]) -> bool {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let first: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    words.contains(&first.as_str())
}

impl Store {
    /// SQLite's own check of the file's structure (`PRAGMA quick_check`): the problems it finds, none
    /// when the file is sound.
    pub fn quick_check(&self) -> Result<Vec<String>> {
        let rows: rusqlite::Result<Vec<String>> = self
            .connection()
            .prepare("PRAGMA quick_check")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
        let rows = self.at(rows.map_err(Error::from))?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }
}
