//! The queue of runs to train: queueing a spec's runs, claiming one (with its fencing token), and
//! taking over runs whose owner is gone, each in one write transaction. The owner's writes, fenced by
//! its token, are [`super::writes`]'.
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

use super::owner::Owner;
use super::status::set_status;
use super::{RunStatus, Store, WeightsKind, now, unix_now};
use crate::core::config::RunConfig;
use crate::core::envelope::{Envelope, Field, TrainedWith};
use crate::core::rng::StreamState;
use crate::core::train::Checkpoint;
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
    /// The adaptive search over its runs, if it has one.
    pub search: Option<&'a crate::core::search::Plan>,
    /// How its best is chosen.
    pub metric: crate::core::search::Metric,
}

/// A run to queue: its name, the values the sweep set (in key order), its resolved config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRun<'a> {
    pub name: &'a str,
    pub overrides: &'a [(String, toml::Value)],
    pub config: &'a RunConfig,
    /// Store the initial weights (otherwise only their hash; they are regenerated from the seed).
    pub keep_initial: bool,
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
    /// Removed with `runner rm` (not trained again unless forced).
    Deleted { id: i64 },
    /// A run of a search at the epochs of its rung, waiting for the rung's decision.
    Paused { id: i64, epochs: usize },
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
    /// A run of a search trains up to its rung's epochs, then pauses (`None`: its config's epochs).
    pub target_epochs: Option<usize>,
    /// A resumed run's kernel and elementary functions so far, as its envelope recorded them (nothing
    /// for a run trained from the start).
    pub trained_with: TrainedWith,
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
    /// The store is this process's alone (a node-local copy for one shard): any other owner is gone.
    pub private: bool,
}

/// What the queue reads of a run's owner.
pub(super) struct OwnerRow {
    pid: Option<i64>,
    host: Option<String>,
    start: Option<String>,
    task: Option<String>,
    heartbeat_at: Option<f64>,
    heartbeat_every: Option<f64>,
}

impl OwnerRow {
    pub(super) const COLUMNS: &'static str =
        "pid, host, owner_start, owner_task, heartbeat_at, heartbeat_every";
    /// How many columns [`OwnerRow::COLUMNS`] reads.
    pub(super) const WIDTH: usize = 6;

    pub(super) fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<OwnerRow> {
        Ok(OwnerRow {
            pid: r.get(at)?,
            host: r.get(at + 1)?,
            start: r.get(at + 2)?,
            task: r.get(at + 3)?,
            heartbeat_at: r.get(at + 4)?,
            heartbeat_every: r.get(at + 5)?,
        })
    }

    pub(super) fn describe(&self) -> String {
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
        // A private store (a node-local copy for one shard): an owner that is not certainly alive on this
        // host is an earlier attempt, gone; a live process on this host holding a run means the store is
        // not private after all, and its run is left to it (the sweep then refuses to go on).
        if c.private {
            return judged != Some(true);
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
            "SELECT id, status, {}, {} IS NOT NULL FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1",
            self.owner_columns(),
            self.col("deleted_at", 3)
        );
        let row = self
            .connection()
            .query_row(&sql, [config_hash], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, RunStatus>(1)?,
                    OwnerRow::read(r, 2)?,
                    r.get::<_, bool>(2 + OwnerRow::WIDTH)?,
                ))
            })
            .optional();
        let row = self.at(row.map_err(Error::from))?;
        match row {
            None => Ok(None),
            Some((id, _, _, true)) => Ok(Some(Queued::Deleted { id })),
            Some((id, status, owner, false)) => Ok(Some(self.at(classify_in(
                self.connection(),
                id,
                status,
                &owner,
                c,
            ))?)),
        }
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
        // A search's schedule and first rungs, with every candidate (this shard's or not), before its runs:
        // then whatever the store can decide already (a merged store, a search resumed).
        if let Some(plan) = exp.search {
            Store::record_search(&tx, exp.name, plan)?;
        }
        // The experiment row of this invocation: made when it adds a run or a membership.
        let mut experiment_id = None;
        let mut experiment = |tx: &Transaction<'_>| -> Result<i64> {
            if let Some(e) = experiment_id {
                return Ok(e);
            }
            // The invocation tells apart shards started at the same moment.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let invocation = format!("{}:{}:{nanos}", c.me.host, c.me.pid);
            tx.execute(
                "INSERT INTO experiments (name, description, spec_path, spec_toml, created_at, invocation,
                    metric)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    exp.name,
                    exp.description,
                    exp.spec_path,
                    exp.spec_text,
                    now(),
                    invocation,
                    exp.metric.as_str()
                ],
            )?;
            Ok(*experiment_id.insert(tx.last_insert_rowid()))
        };
        // A spec that now selects its best by another metric records that, even with every run done.
        let stored_metric: Option<Option<String>> = tx
            .query_row(
                "SELECT metric FROM experiments WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                [exp.name],
                |r| r.get(0),
            )
            .optional()?;
        if stored_metric.is_some_and(|m| m.as_deref() != Some(exp.metric.as_str())) {
            experiment(&tx)?;
        }
        let mut out = Vec::with_capacity(runs.len());
        let sql = format!(
            "SELECT id, status, {}, deleted_at IS NOT NULL FROM runs WHERE config_hash = ?1
             ORDER BY id DESC LIMIT 1",
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
                        r.get::<_, bool>(2 + OwnerRow::WIDTH)?,
                    ))
                })
                .optional()?;
            // A run a search pruned is done for that search only: a spec that asks for its config
            // otherwise (a plain grid, another search) trains it in full, as a new row.
            let searched = exp
                .search
                .is_some_and(|p| p.brackets.iter().any(|b| b.members.contains(&hash)));
            // With --force a finished (or deleted) run is trained again as a new attempt that supersedes it.
            let mut supersedes = None;
            let queued = match prev {
                Some((_, RunStatus::Pruned, _, false)) if !searched => None,
                // A deleted run is trained again (a new row) only when forced.
                Some((id, _, _, true)) if force => {
                    supersedes = Some(id);
                    None
                }
                Some((id, _, _, true)) => Some(Queued::Deleted { id }),
                Some((id, status, _, _)) if status.is_finished() && force => {
                    supersedes = Some(id);
                    None
                }
                Some((id, RunStatus::Failed, _, _)) => {
                    reset_run(&tx, id)?;
                    Some(Queued::Unfinished {
                        id,
                        status: RunStatus::Pending,
                    })
                }
                Some((id, status, owner, _)) => Some(classify_in(&tx, id, status, &owner, c)?),
                None => None,
            };
            let queued = match queued {
                Some(q) => {
                    // A run stored already (by this experiment or another that shares it) belongs to
                    // this experiment too.
                    if !is_member(&tx, exp.name, q.id())? {
                        experiment(&tx)?;
                        add_member(&tx, exp.name, q.id(), run, &hash)?;
                    }
                    q
                }
                None => {
                    let eid = experiment(&tx)?;
                    let id = insert_pending(&tx, eid, exp.name, run, searched.then_some(exp))?;
                    if let Some(old) = supersedes {
                        supersede(&tx, old, id)?;
                    }
                    Queued::New { id }
                }
            };
            out.push(queued);
        }
        if exp.search.is_some() {
            super::search::settle_in(&tx)?;
            // Decisions may have pruned or paused what was just classified: classify again.
            for (q, run) in out.iter_mut().zip(runs) {
                if let Some(row) = tx
                    .query_row(&sql, [run.config.hash()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, RunStatus>(1)?,
                            OwnerRow::read(r, 2)?,
                            r.get::<_, bool>(2 + OwnerRow::WIDTH)?,
                        ))
                    })
                    .optional()?
                    && !row.3
                    && !matches!(q, Queued::New { .. })
                {
                    *q = classify_in(&tx, row.0, row.1, &row.2, c)?;
                }
            }
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
        env: &dyn Fn(&str, &TrainedWith) -> Envelope,
        c: &Claimant<'_>,
    ) -> Result<Option<Claim>> {
        self.at(self.claim_inner(config_hashes, env, c))
    }

    fn claim_inner(
        &self,
        config_hashes: &[String],
        env: &dyn Fn(&str, &TrainedWith) -> Envelope,
        c: &Claimant<'_>,
    ) -> Result<Option<Claim>> {
        let hashes = serde_json::Value::from(config_hashes.to_vec()).to_string();
        let tx = self.write_tx()?;
        let running: Vec<(i64, OwnerRow)> = tx
            .prepare(&format!(
                "SELECT id, {} FROM runs
                 WHERE status = 'running' AND deleted_at IS NULL
                   AND config_hash IN (SELECT value FROM json_each(?1))",
                OwnerRow::COLUMNS
            ))?
            .query_map([&hashes], |r| Ok((r.get(0)?, OwnerRow::read(r, 1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, owner) in running {
            if owner.gone(c) {
                set_status(&tx, id, RunStatus::Running, RunStatus::Interrupted)?;
            }
        }
        // A paused run of a search is claimed again once a decision promoted it (a rung with more epochs
        // than it has waits for it).
        let next: Option<(i64, String, RunStatus, Option<i64>)> = tx
            .query_row(
                "SELECT id, config_hash, status, checkpoint_epoch FROM runs r
                 WHERE deleted_at IS NULL AND config_hash IN (SELECT value FROM json_each(?1))
                   AND (status IN ('pending', 'interrupted') OR (status = 'paused' AND EXISTS (
                       SELECT 1 FROM rung_members m WHERE m.config_hash = r.config_hash
                       AND m.decided_at IS NULL AND m.epochs > r.epochs_done)))
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
        if checkpoint_epoch.is_none() {
            // Trained from the start: nothing of an earlier attempt may stay (a run interrupted before
            // its first epoch has its initial weights stored; an edited store may hold more).
            clear_progress(&tx, id)?;
        }
        // A run resumed from a checkpoint goes on with the kernel it was trained with so far.
        let trained_with = match checkpoint_epoch {
            Some(_) => tx.query_row(
                "SELECT gemm_kernel, math FROM runs WHERE id = ?1",
                [id],
                |r| {
                    Ok(TrainedWith {
                        kernel: r.get(0)?,
                        math: r.get(1)?,
                    })
                },
            )?,
            None => TrainedWith::default(),
        };
        let env = env(&config_hash, &trained_with);
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
        let target_epochs = Store::target_epochs(&tx, &config_hash)?;
        tx.commit()?;
        Ok(Some(Claim {
            id,
            config_hash,
            token,
            checkpoint_epoch: checkpoint_epoch.map(|e| e.max(0) as usize),
            target_epochs,
            trained_with,
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
        let state = if self.version() >= 6 {
            let expected: Option<String> = self.at(self
                .connection()
                .query_row(
                    "SELECT checkpoint_state_sha256 FROM runs WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(Error::from))?;
            match super::integrity::read_state(self.connection(), id, expected.as_deref())? {
                None if expected.is_some() => {
                    return Err(self.corrupt(format!(
                        "run {id}, its checkpoint of epoch {epoch} has a hash of optimizer state but no \
                         rows of it"
                    )));
                }
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    return Err(
                        self.corrupt(format!("run {id}, its checkpoint of epoch {epoch}: {e}"))
                    );
                }
            }
        } else {
            None
        };
        Ok(Some(Checkpoint {
            epoch,
            params,
            shuffle,
            state,
            stopped: None,
            errors: None,
        }))
    }
}

impl Queued {
    /// The run's id (0 for a run a plan has no row for yet).
    pub fn id(&self) -> i64 {
        match self {
            Queued::Done { id, .. }
            | Queued::New { id }
            | Queued::Unfinished { id, .. }
            | Queued::Held { id, .. }
            | Queued::Deleted { id }
            | Queued::Paused { id, .. } => *id,
        }
    }
}

/// Is run `id` a member of the experiment `name`?
fn is_member(tx: &Transaction<'_>, experiment: &str, id: i64) -> Result<bool> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM members WHERE experiment = ?1 AND run_id = ?2)",
        params![experiment, id],
        |r| r.get(0),
    )?)
}

/// Make run `id` (config hash `hash`) a member of the experiment `experiment` under `name`. Names are unique among an experiment's current runs: a current run of
/// another config with the name already (the spec changed outside its sweep) makes this one
/// `<name>~<first 8 hex digits of its config hash>`.
fn add_member(
    tx: &Transaction<'_>,
    experiment: &str,
    id: i64,
    run: &NewRun<'_>,
    hash: &str,
) -> Result<String> {
    let name = run.name;
    let taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM members m JOIN runs r ON r.id = m.run_id
             WHERE m.experiment = ?1 AND m.name = ?2 AND r.config_hash != ?3 AND r.superseded_by IS NULL)",
        params![experiment, name, hash],
        |r| r.get(0),
    )?;
    let name = if taken {
        format!("{name}~{}", &hash[..8.min(hash.len())])
    } else {
        name.to_string()
    };
    tx.execute(
        "INSERT OR IGNORE INTO members (experiment, run_id, name, overrides, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![experiment, id, name, overrides_json(run)?, now()],
    )?;
    Ok(name)
}

/// Run `new` is a new attempt of run `old`'s config (`--force`): `old` becomes history (out of every view
/// and statistic), and `new` joins every experiment `old` belonged to, under the same names.
fn supersede(tx: &Transaction<'_>, old: i64, new: i64) -> Result<()> {
    tx.execute(
        "UPDATE runs SET superseded_by = ?2 WHERE id = ?1",
        params![old, new],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO members (experiment, run_id, name, overrides, added_at)
         SELECT experiment, ?2, name, overrides, ?3 FROM members WHERE run_id = ?1",
        params![old, new, now()],
    )?;
    Ok(())
}

/// Where a run stands for a claimant, in a transaction that can tell a paused run that waits for its rung
/// from one promoted to train on.
fn classify_in(
    tx: &rusqlite::Connection,
    id: i64,
    status: RunStatus,
    owner: &OwnerRow,
    c: &Claimant<'_>,
) -> Result<Queued> {
    if status == RunStatus::Paused {
        let (hash, done): (String, i64) = tx.query_row(
            "SELECT config_hash, epochs_done FROM runs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let done = done.max(0) as usize;
        return Ok(match Store::target_epochs(tx, &hash)? {
            Some(t) if t > done => Queued::Unfinished { id, status },
            _ => Queued::Paused { id, epochs: done },
        });
    }
    Ok(classify(id, status, owner, c))
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

/// Insert a `pending` row for a planned run, a member of its experiment (see [`add_member`] for its
/// name); the owner and envelope columns are filled when a process claims it.
fn insert_pending(
    tx: &Transaction<'_>,
    experiment_id: i64,
    experiment: &str,
    run: &NewRun<'_>,
    search: Option<&NewExperiment<'_>>,
) -> Result<i64> {
    let c = run.config;
    let hash = c.hash();
    // Validated configs always serialise (`RunConfig::validate` bounds the seed).
    let config_toml = c
        .to_toml()
        .map_err(|e| Error::internal(format!("run {}: {e}", run.name)))?;
    tx.execute(
        "INSERT INTO runs (experiment_id, name, status, seed, sizes, activation, init, dtype, batch_size,
            learning_rate, epochs, drop_last, data_dir, data_format, limit_train, limit_test, overrides,
            config_toml, config_hash, seed_group, created_at, initial_stored, validation, search, optimizer,
            dropout)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
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
            overrides_json(run)?,
            config_toml,
            hash,
            c.seed_group(),
            now(),
            run.keep_initial,
            c.data.validation.map(|v| v as i64),
            search.and_then(|e| e.search).map(|p| p.hash()),
            c.optimizer.describe(),
            c.model.dropout.describe(),
        ],
    )?;
    let id = tx.last_insert_rowid();
    // The row keeps its name in this experiment (the one it was queued by).
    let name = add_member(tx, experiment, id, run, &hash)?;
    tx.execute("UPDATE runs SET name = ?2 WHERE id = ?1", params![id, name])?;
    Ok(id)
}

/// The values the sweep set for a run, as a JSON object.
fn overrides_json(run: &NewRun<'_>) -> Result<String> {
    let overrides: serde_json::Map<String, serde_json::Value> = run
        .overrides
        .iter()
        .map(|(k, v)| {
            let v = serde_json::to_value(v)
                .map_err(|e| Error::internal(format!("sweep value {k} as JSON: {e}")))?;
            Ok((k.clone(), v))
        })
        .collect::<Result<_>>()?;
    Ok(serde_json::Value::Object(overrides).to_string())
}

/// Put a failed run back to `pending` with nothing stored: it will be trained from the start.
fn reset_run(tx: &Transaction<'_>, id: i64) -> Result<()> {
    set_status(tx, id, RunStatus::Failed, RunStatus::Pending)?;
    clear_progress(tx, id)
}

/// Remove everything a run has stored of its training: epochs, weights, results, hashes.
fn clear_progress(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.execute("DELETE FROM epochs WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM weights WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM checkpoint_state WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM confusion WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM misclassified WHERE run_id = ?1", [id])?;
    tx.execute("DELETE FROM epoch_classes WHERE run_id = ?1", [id])?;
    tx.execute(
        "UPDATE runs SET epochs_done = 0, train_loss = NULL, train_acc = NULL, test_loss = NULL,
            test_acc = NULL, val_loss = NULL, val_acc = NULL, diverged_epoch = NULL, error = NULL,
            started_at = NULL, finished_at = NULL,
            seconds = NULL, checkpoint_epoch = NULL, checkpoint_rng = NULL, checkpoint_sha256 = NULL,
            checkpoint_state_sha256 = NULL, metrics_sha256 = NULL, init_weights_sha256 = NULL, weights_sha256 = NULL, dataset_sha256 = NULL,
            result_sha256 = NULL, data_path = NULL
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
