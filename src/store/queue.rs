//! The queue of runs to train: queueing a spec's runs, claiming one, proving ownership, and storing a
//! run's progress, each in one write transaction.
//!
//! **Fencing.** Every claim increments the run's `claim` counter and hands the new value to the claimer as
//! its token. Every later write of that run (its start, each epoch, its end, its heartbeat) checks, in the
//! same transaction, that the run is still `running` under that token; if another process has taken it
//! over since, the write changes nothing and fails with [`Error::Lost`]. So a process that was stopped
//! (SIGSTOP, a hung file system) and taken over cannot overwrite, fail or demote what the new owner wrote.
//!
//! **Takeover.** A `running` run is taken over when its owner is certainly gone (a dead process on this
//! host, as [`Owner`] tells) or has given no sign of life for longer than both the claimer's
//! `stale_after` and three of the owner's own heartbeat intervals.

use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction, params};

use super::integrity::metrics_sha256;
use super::owner::Owner;
use super::{RunStatus, Store, WeightsKind, now, unix_now};
use crate::core::config::RunConfig;
use crate::core::envelope::{Envelope, Field};
use crate::core::model::Snapshot;
use crate::core::rng::StreamState;
use crate::core::train::{Checkpoint, EpochMetrics};
use crate::error::{Error, Result};

/// How many heartbeat intervals without a sign of life make an owner stale at the least.
pub(crate) const MISSED_HEARTBEATS: f64 = 3.0;

/// An invocation of a spec, as stored in `experiments`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewExperiment<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub spec_path: &'a str,
    pub spec_text: &'a str,
}

/// A run to queue: its name, the values the sweep set (in key order), its resolved config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRun<'a> {
    pub name: &'a str,
    pub overrides: &'a [(String, toml::Value)],
    pub config: &'a RunConfig,
}

/// Where a run of a spec stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// Completed or diverged already.
    Done { id: i64, status: RunStatus },
    /// A new row (or, for a plan, no row yet): to train from the start.
    New { id: i64 },
    /// To train: `pending`, `interrupted`, `failed` (reset to `pending`), or `running` with an owner that
    /// is gone; resumed from its checkpoint if it has one.
    Unfinished { id: i64, status: RunStatus },
    /// Being trained by an owner that may be alive.
    Held { id: i64, owner: String },
}

/// A run this process now owns: its id, config hash and fencing token.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub id: i64,
    pub config_hash: String,
    /// The run's `claim` counter after this claim: every write of the run checks it.
    pub token: i64,
    /// The epoch of its checkpoint, if it is resumed.
    pub checkpoint_epoch: Option<usize>,
}

/// How claims judge owners.
#[derive(Debug, Clone)]
pub(crate) struct Claimant<'a> {
    /// This process.
    pub me: &'a Owner,
    /// A run whose owner has not been heard of for this long (and three of its heartbeats) is taken over.
    pub stale_after: Duration,
    /// How often this process beats for the runs it owns (stored, so that others judge it by it).
    pub heartbeat_every: Duration,
}

/// What the queue reads of a run's owner.
struct OwnerRow {
    pid: Option<i64>,
    host: Option<String>,
    start: Option<String>,
    task: Option<String>,
    heartbeat_at: Option<f64>,
    heartbeat_every: Option<f64>,
}

impl OwnerRow {
    const COLUMNS: &'static str =
        "pid, host, owner_start, owner_task, heartbeat_at, heartbeat_every";

    fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<OwnerRow> {
        Ok(OwnerRow {
            pid: r.get(at)?,
            host: r.get(at + 1)?,
            start: r.get(at + 2)?,
            task: r.get(at + 3)?,
            heartbeat_at: r.get(at + 4)?,
            heartbeat_every: r.get(at + 5)?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "pid {} on host {}",
            self.pid.map_or("?".into(), |p| p.to_string()),
            crate::text::clean(self.host.as_deref().unwrap_or("?"))
        )
    }

    /// Is the owner gone, as `c` judges it now?
    fn gone(&self, c: &Claimant<'_>) -> bool {
        let judged = Owner::judge(
            c.me,
            self.pid,
            self.host.as_deref(),
            self.start.as_deref(),
            self.task.as_deref(),
        );
        if judged == Some(false) {
            return true;
        }
        let limit = c
            .stale_after
            .as_secs_f64()
            .max(MISSED_HEARTBEATS * self.heartbeat_every.unwrap_or(0.0));
        self.heartbeat_at
            .is_none_or(|beat| unix_now() - beat > limit)
    }
}

impl Store {
    fn owner_columns(&self) -> String {
        if self.version() >= 2 {
            OwnerRow::COLUMNS.to_string()
        } else {
            "pid, host, NULL, NULL, heartbeat_at, NULL".to_string()
        }
    }

    /// Where the latest run with this config hash stands, judged as a claim by `c` would (read only);
    /// `None` if there is none.
    pub(crate) fn standing(&self, config_hash: &str, c: &Claimant<'_>) -> Result<Option<Queued>> {
        let sql = format!(
            "SELECT id, status, {} FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1",
            self.owner_columns()
        );
        let row = self
            .connection()
            .query_row(&sql, [config_hash], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, RunStatus>(1)?,
                    OwnerRow::read(r, 2)?,
                ))
            })
            .optional();
        let row = self.at(row.map_err(Error::from))?;
        Ok(row.map(|(id, status, owner)| classify(id, status, &owner, c)))
    }

    /// Queue the runs of an experiment in one transaction and say where each stands. A run with no row
    /// yet (or, with `force`, whose latest row is finished) gets a new `pending` row, under a new
    /// experiment row; a `failed` run is reset to `pending`; other rows stay as they are (claimed,
    /// resumed or left to their owner later).
    pub(crate) fn enqueue(
        &self,
        exp: &NewExperiment<'_>,
        runs: &[NewRun<'_>],
        force: bool,
        c: &Claimant<'_>,
    ) -> Result<Vec<Queued>> {
        self.at(self.enqueue_inner(exp, runs, force, c))
    }

    fn enqueue_inner(
        &self,
        exp: &NewExperiment<'_>,
        runs: &[NewRun<'_>],
        force: bool,
        c: &Claimant<'_>,
    ) -> Result<Vec<Queued>> {
        let tx = self.write_tx()?;
        let mut experiment_id = None;
        let mut out = Vec::with_capacity(runs.len());
        let sql = format!(
            "SELECT id, status, {} FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1",
            self.owner_columns()
        );
        for run in runs {
            let hash = run.config.hash();
            let prev = tx
                .query_row(&sql, [&hash], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, RunStatus>(1)?,
                        OwnerRow::read(r, 2)?,
                    ))
                })
                .optional()?;
            let queued = match prev {
                Some((_, status, _)) if status.is_finished() && force => None,
                Some((id, RunStatus::Failed, _)) => {
                    reset_run(&tx, id)?;
                    Some(Queued::Unfinished {
                        id,
                        status: RunStatus::Pending,
                    })
                }
                Some((id, status, owner)) => Some(classify(id, status, &owner, c)),
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
                                params![exp.name, exp.description, exp.spec_path, exp.spec_text, now()],
                            )?;
                            *experiment_id.insert(tx.last_insert_rowid())
                        }
                    };
                    Queued::New {
                        id: insert_pending(&tx, eid, run)?,
                    }
                }
            };
            out.push(queued);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Take the next run of `config_hashes` that needs training: `pending`, `interrupted`, or `running`
    /// with an owner that is gone (which becomes `interrupted` first). One transaction: two processes never
    /// claim the same run. The claimer becomes the owner, gets the run's next fencing token, and records
    /// its envelope, `env` of the run's config hash.
    pub(crate) fn claim(
        &self,
        config_hashes: &[String],
        env: &dyn Fn(&str) -> Envelope,
        c: &Claimant<'_>,
    ) -> Result<Option<Claim>> {
        self.at(self.claim_inner(config_hashes, env, c))
    }

    fn claim_inner(
        &self,
        config_hashes: &[String],
        env: &dyn Fn(&str) -> Envelope,
        c: &Claimant<'_>,
    ) -> Result<Option<Claim>> {
        let hashes = serde_json::Value::from(config_hashes.to_vec()).to_string();
        let tx = self.write_tx()?;
        let running: Vec<(i64, OwnerRow)> = tx
            .prepare(&format!(
                "SELECT id, {} FROM runs
                 WHERE status = 'running' AND config_hash IN (SELECT value FROM json_each(?1))",
                OwnerRow::COLUMNS
            ))?
            .query_map([&hashes], |r| Ok((r.get(0)?, OwnerRow::read(r, 1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, owner) in running {
            if owner.gone(c) {
                set_status(&tx, id, RunStatus::Running, RunStatus::Interrupted)?;
            }
        }
        let next: Option<(i64, String, RunStatus, Option<i64>)> = tx
            .query_row(
                "SELECT id, config_hash, status, checkpoint_epoch FROM runs
                 WHERE status IN ('pending', 'interrupted') AND config_hash IN (SELECT value FROM json_each(?1))
                 ORDER BY id LIMIT 1",
                [&hashes],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, config_hash, status, checkpoint_epoch)) = next else {
            tx.commit()?;
            return Ok(None);
        };
        set_status(&tx, id, status, RunStatus::Running)?;
        let env = env(&config_hash);
        let me = c.me;
        tx.execute(
            "UPDATE runs SET claim = claim + 1, pid = ?2, host = ?3, owner_start = ?4, owner_task = ?5,
                heartbeat_at = ?6, heartbeat_every = ?7, resumes = resumes + ?8
             WHERE id = ?1",
            params![
                id,
                me.pid,
                me.host,
                me.start,
                me.task,
                unix_now(),
                c.heartbeat_every.as_secs_f64(),
                i64::from(checkpoint_epoch.is_some()),
            ],
        )?;
        for (column, value) in env.fields() {
            if column == "host" {
                continue; // the owner's, written above
            }
            let value = match value {
                Field::Text(s) => rusqlite::types::Value::Text(s),
                Field::Int(i) => rusqlite::types::Value::Integer(i),
                Field::Null => rusqlite::types::Value::Null,
            };
            // Column names come from `Envelope::fields`, a fixed list; values are bound.
            tx.execute(
                &format!("UPDATE runs SET {column} = ?2 WHERE id = ?1"),
                params![id, value],
            )?;
        }
        let token: i64 =
            tx.query_row("SELECT claim FROM runs WHERE id = ?1", [id], |r| r.get(0))?;
        tx.commit()?;
        Ok(Some(Claim {
            id,
            config_hash,
            token,
            checkpoint_epoch: checkpoint_epoch.map(|e| e.max(0) as usize),
        }))
    }

    /// The checkpoint a claimed run resumes from: its weights (checked against their hash) and the
    /// shuffle stream's position. A missing or corrupt checkpoint is a corrupt-store error.
    pub(crate) fn checkpoint(&self, claim: &Claim) -> Result<Option<Checkpoint>> {
        let Some(epoch) = claim.checkpoint_epoch else {
            return Ok(None);
        };
        let id = claim.id;
        let rng: Option<String> = self.at(self
            .connection()
            .query_row("SELECT checkpoint_rng FROM runs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(Error::from))?;
        let shuffle = rng.as_deref().and_then(parse_stream_state).ok_or_else(|| {
            self.corrupt(format!(
                "run {id}, its checkpoint of epoch {epoch} has no readable shuffle-stream position"
            ))
        })?;
        let params = self.weights(id, WeightsKind::Checkpoint)?.ok_or_else(|| {
            self.corrupt(format!(
                "run {id}, its checkpoint of epoch {epoch} has no weights"
            ))
        })?;
        Ok(Some(Checkpoint {
            epoch,
            params,
            shuffle,
        }))
    }

    /// Tell other processes that this process, holding `token`, still owns run `run_id`; `Err(Lost)` if
    /// it does not any more.
    pub(crate) fn heartbeat(&self, run_id: i64, token: i64) -> Result<()> {
        self.at(self.fenced(run_id, token, |tx| {
            tx.execute(
                "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
                params![run_id, unix_now()],
            )?;
            Ok(())
        }))
    }

    /// Store the initial weights of a run this process owns, in one fenced transaction.
    pub(crate) fn start_run(
        &self,
        run_id: i64,
        token: i64,
        dataset_sha256: &str,
        initial: &Snapshot,
    ) -> Result<()> {
        self.at(self.fenced(run_id, token, |tx| {
            tx.execute(
                "UPDATE runs SET started_at = ?2, dataset_sha256 = ?3, init_weights_sha256 = ?4 WHERE id = ?1",
                params![run_id, now(), dataset_sha256, initial.sha256()],
            )?;
            insert_weights(tx, run_id, WeightsKind::Initial, 0, initial)
        }))
    }

    /// Store one epoch with its checkpoint (parameters and shuffle-stream state, to resume from), in one
    /// fenced transaction. With `finish` (completed or diverged) the run ends in the same transaction: its
    /// status and final weights are written with the epoch's row, the checkpoint, now redundant, is
    /// dropped, and an error left by an earlier attempt is cleared.
    pub(crate) fn record_epoch(
        &self,
        run_id: i64,
        token: i64,
        m: &EpochMetrics,
        checkpoint: &Checkpoint,
        finish: Option<RunStatus>,
    ) -> Result<()> {
        self.at(self.fenced(run_id, token, |tx| {
            tx.execute(
                "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run_id, m.epoch as i64, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds, m.train_seconds],
            )?;
            tx.execute(
                "UPDATE runs SET epochs_done = ?2, train_loss = ?3, train_acc = ?4, test_loss = ?5, test_acc = ?6,
                    seconds = (SELECT SUM(seconds) FROM epochs WHERE run_id = ?1), metrics_sha256 = ?7,
                    heartbeat_at = ?8 WHERE id = ?1",
                params![
                    run_id,
                    m.epoch as i64,
                    m.train_loss,
                    m.train_acc,
                    m.test_loss,
                    m.test_acc,
                    metrics_sha256(tx, run_id)?,
                    unix_now()
                ],
            )?;
            let params = &checkpoint.params;
            match finish {
                Some(status) => {
                    if !status.is_finished() {
                        return Err(Error::internal(format!("an epoch cannot end a run as {status}")));
                    }
                    insert_weights(tx, run_id, WeightsKind::Final, m.epoch, params)?;
                    tx.execute(
                        "DELETE FROM weights WHERE run_id = ?1 AND kind = 'checkpoint'",
                        [run_id],
                    )?;
                    set_status(tx, run_id, RunStatus::Running, status)?;
                    let diverged_epoch = (status == RunStatus::Diverged).then_some(m.epoch as i64);
                    tx.execute(
                        "UPDATE runs SET weights_sha256 = ?2, diverged_epoch = ?3, finished_at = ?4, error = NULL,
                            checkpoint_epoch = NULL, checkpoint_rng = NULL, checkpoint_sha256 = NULL WHERE id = ?1",
                        params![run_id, params.sha256(), diverged_epoch, now()],
                    )?;
                }
                None => {
                    insert_weights(tx, run_id, WeightsKind::Checkpoint, m.epoch, params)?;
                    let s = checkpoint.shuffle;
                    tx.execute(
                        "UPDATE runs SET checkpoint_epoch = ?2, checkpoint_rng = ?3, checkpoint_sha256 = ?4
                         WHERE id = ?1",
                        params![
                            run_id,
                            m.epoch as i64,
                            format!("{}:{}:{}", s.seed, s.stream, s.word_pos),
                            params.sha256()
                        ],
                    )?;
                }
            }
            Ok(())
        }))
    }

    /// End a run this process owns that did not finish training: `failed` (with the error) or
    /// `interrupted`. Fenced: a run taken over meanwhile is left as its new owner has it.
    pub(crate) fn end_run(
        &self,
        run_id: i64,
        token: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.at(self.fenced(run_id, token, |tx| {
            set_status(tx, run_id, RunStatus::Running, status)?;
            tx.execute(
                "UPDATE runs SET error = ?2, finished_at = ?3 WHERE id = ?1",
                params![run_id, error, now()],
            )?;
            Ok(())
        }))
    }

    /// Run `write` in one write transaction if this process still owns run `run_id` under `token`;
    /// otherwise change nothing and return [`Error::Lost`] saying who has it now.
    fn fenced(
        &self,
        run_id: i64,
        token: i64,
        write: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let (status, claim, owner): (RunStatus, i64, OwnerRow) = tx
            .query_row(
                &format!(
                    "SELECT status, claim, {} FROM runs WHERE id = ?1",
                    OwnerRow::COLUMNS
                ),
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?, OwnerRow::read(r, 2)?)),
            )
            .optional()?
            .ok_or_else(|| Error::Lost {
                run: run_id,
                msg: "its row is gone from the store".into(),
            })?;
        if claim != token || status != RunStatus::Running {
            let what = if claim == token {
                format!("is {status} now")
            } else {
                format!(
                    "was taken over by {} (claim {claim}; this process held claim {token}) and is {status} \
                     now",
                    owner.describe()
                )
            };
            return Err(Error::Lost {
                run: run_id,
                msg: format!(
                    "{what}: this process lost it (it gave no sign of life for too long, e.g. it was \
                     stopped) and has stopped training it, leaving the store as the new owner has it"
                ),
            });
        }
        write(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// Where a run stands for a claimant.
fn classify(id: i64, status: RunStatus, owner: &OwnerRow, c: &Claimant<'_>) -> Queued {
    match status {
        s if s.is_finished() => Queued::Done { id, status: s },
        RunStatus::Running if !owner.gone(c) => Queued::Held {
            id,
            owner: owner.describe(),
        },
        s => Queued::Unfinished { id, status: s },
    }
}

/// Change a run's status from `from` to `to`, a transition [`RunStatus::can_become`] allows.
fn set_status(tx: &Transaction<'_>, id: i64, from: RunStatus, to: RunStatus) -> Result<()> {
    if !from.can_become(to) {
        return Err(Error::internal(format!(
            "run {id}: the queue tried to make a {from} run {to}"
        )));
    }
    let n = tx.execute(
        "UPDATE runs SET status = ?3 WHERE id = ?1 AND status = ?2",
        params![id, from, to],
    )?;
    if n != 1 {
        return Err(Error::internal(format!(
            "run {id}: expected it {from} to make it {to}"
        )));
    }
    Ok(())
}

/// Insert a `pending` row for a planned run; the owner and envelope columns are filled when a process
/// claims it.
fn insert_pending(tx: &Transaction<'_>, experiment_id: i64, run: &NewRun<'_>) -> Result<i64> {
    let c = run.config;
    let overrides: serde_json::Map<String, serde_json::Value> = run
        .overrides
        .iter()
        .map(|(k, v)| {
            let v = serde_json::to_value(v)
                .map_err(|e| Error::internal(format!("sweep value {k} as JSON: {e}")))?;
            Ok((k.clone(), v))
        })
        .collect::<Result<_>>()?;
    // Validated configs always serialise (`RunConfig::validate` bounds the seed).
    let config_toml = c
        .to_toml()
        .map_err(|e| Error::internal(format!("run {}: {e}", run.name)))?;
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
            serde_json::Value::from(c.model.sizes.clone()).to_string(),
            c.model.activation.as_str(),
            c.model.init.as_str(),
            c.model.dtype.as_str(),
            c.train.batch_size as i64,
            c.train.learning_rate,
            c.train.epochs as i64,
            c.train.drop_last,
            c.data.dir,
            c.data.format.as_str(),
            c.data.limit_train.map(|v| v as i64),
            c.data.limit_test.map(|v| v as i64),
            serde_json::Value::Object(overrides).to_string(),
            config_toml,
            c.hash(),
            c.seed_group(),
            now(),
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Put a failed run back to `pending` with nothing stored: it will be trained from the start.
fn reset_run(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.execute("DELETE FROM epochs WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM weights WHERE run_id = ?1", [id])?;
    set_status(tx, id, RunStatus::Failed, RunStatus::Pending)?;
    tx.execute(
        "UPDATE runs SET epochs_done = 0, train_loss = NULL, train_acc = NULL, test_loss = NULL,
            test_acc = NULL, diverged_epoch = NULL, error = NULL, started_at = NULL, finished_at = NULL,
            seconds = NULL, checkpoint_epoch = NULL, checkpoint_rng = NULL, checkpoint_sha256 = NULL,
            metrics_sha256 = NULL, init_weights_sha256 = NULL, weights_sha256 = NULL, dataset_sha256 = NULL
         WHERE id = ?1",
        [id],
    )?;
    Ok(())
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

/// Write a snapshot's tensors as `kind` weights (replacing any of that kind).
fn insert_weights(
    tx: &Transaction<'_>,
    run_id: i64,
    kind: WeightsKind,
    epoch: usize,
    s: &Snapshot,
) -> Result<()> {
    tx.execute(
        "DELETE FROM weights WHERE run_id = ?1 AND kind = ?2",
        params![run_id, kind.as_str()],
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO weights (run_id, kind, epoch, layer, param, shape, dtype, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for t in &s.tensors {
        stmt.execute(params![
            run_id,
            kind.as_str(),
            epoch as i64,
            t.layer as i64,
            t.param,
            serde_json::Value::from(t.shape.clone()).to_string(),
            s.dtype.as_str(),
            t.data
        ])?;
    }
    Ok(())
}
