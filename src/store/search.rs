//! Adaptive searches in the store: a search's schedule (`searches`), the runs of each rung and what was
//! decided about them (`rung_members`), and the settling of a store: every rung whose runs all have their
//! rung's epochs (or diverged) is decided, its best promoted to the next rung, and runs left with nothing
//! to wait for are pruned.
//!
//! **Every decision is a pure function of stored bits.** A rung is decided from the metrics its runs have
//! stored at the rung's epochs ([`crate::core::search::decide`]), inside the write transaction of the epoch
//! that completes it, by whichever process writes that epoch; a rung decided already is never decided
//! again. So the promoted set of every rung is the same with one worker or many, one process or several,
//! after a kill at any point (a transaction either happened or did not), and in a store merged from shards.
//! Members are named by config hash, so that a store that lacks some (one shard's) waits for them.
//!
//! A run that `failed` (an error outside its spec and data, such as a full disk) holds its rung until it
//! is retried (the next `runner <spec>` does): deciding without it would make the decision depend on the
//! failure. A deleted run (`runner rm`) counts as a run that cannot be promoted.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{RunStatus, Store, WeightsKind, now};
use crate::core::search::{Member, Metric, Plan, decide};
use crate::error::{Error, Result};

/// One rung of a search as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RungState {
    pub search: String,
    pub experiment: String,
    pub bracket: i64,
    pub rung: i64,
    pub epochs: i64,
    pub metric: String,
    /// The rung's runs: run id (if this store has the run), name, the metric, place, promoted.
    pub members: Vec<RungMember>,
    pub decided: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RungMember {
    pub config_hash: String,
    pub run_id: Option<i64>,
    pub name: Option<String>,
    pub status: Option<RunStatus>,
    pub epochs_done: Option<i64>,
    pub value: Option<f64>,
    pub place: Option<i64>,
    pub promoted: Option<bool>,
}

/// How far a search has come in this store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchProgress {
    /// Rungs with their decision still to make.
    pub undecided: usize,
    /// Runs of the search being trained (by any process).
    pub running: usize,
    /// Runs this store can train now.
    pub claimable: usize,
    /// Runs of an undecided rung that this store does not have (another shard's).
    pub missing: usize,
    /// Runs that failed and hold their rung until retried.
    pub failed: usize,
}

/// What writing an epoch did to a run of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEpoch {
    /// Train on.
    Continue,
    /// It reached the epochs of its rung and waits for the rung's decision.
    Paused,
    /// Its rung was decided (by this epoch or before) and it is not promoted: it ended as `pruned`.
    Pruned,
}

impl Store {
    /// Record a search (if new) and the first rung of each bracket, inside the queueing transaction.
    pub(crate) fn record_search(tx: &Transaction<'_>, experiment: &str, plan: &Plan) -> Result<()> {
        let hash = plan.hash();
        tx.execute(
            "INSERT OR IGNORE INTO searches (search, experiment, method, eta, metric, min_epochs, max_epochs,
                schedule, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                hash,
                experiment,
                plan.method.as_str(),
                plan.eta as i64,
                plan.metric.as_str(),
                plan.min_epochs as i64,
                plan.max_epochs as i64,
                plan.schedule_json(),
                now()
            ],
        )?;
        for (b, bracket) in plan.brackets.iter().enumerate() {
            let Some(first) = bracket.rungs.first() else {
                continue;
            };
            for member in &bracket.members {
                tx.execute(
                    "INSERT OR IGNORE INTO rung_members (search, bracket, rung, config_hash, epochs)
                     VALUES (?1, ?2, 0, ?3, ?4)",
                    params![hash, b as i64, member, first.epochs as i64],
                )?;
            }
        }
        Ok(())
    }

    /// The epochs a run with this config hash is to train to now: the most epochs of a rung it is in
    /// that is not decided yet (`None`: it is in no undecided rung).
    pub(crate) fn target_epochs(
        tx: &rusqlite::Connection,
        config_hash: &str,
    ) -> Result<Option<usize>> {
        if !has_searches(tx)? {
            return Ok(None);
        }
        let t: Option<i64> = tx.query_row(
            "SELECT max(epochs) FROM rung_members WHERE config_hash = ?1 AND decided_at IS NULL",
            [config_hash],
            |r| r.get(0),
        )?;
        Ok(t.map(|t| t.max(0) as usize))
    }

    /// Is this config hash a member of any search in this store?
    pub(crate) fn in_search(tx: &rusqlite::Connection, config_hash: &str) -> Result<bool> {
        if !has_searches(tx)? {
            return Ok(false);
        }
        Ok(tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM rung_members WHERE config_hash = ?1)",
            [config_hash],
            |r| r.get(0),
        )?)
    }

    /// After an epoch of run `run_id` (config hash `hash`, `epochs_done` stored, `max_epochs` in its
    /// config) was written in `tx`: decide what can be decided, pause the run if it reached every rung it
    /// is in, and prune what waits for nothing. Inside the epoch's transaction.
    pub(crate) fn after_epoch(
        tx: &Transaction<'_>,
        run_id: i64,
        hash: &str,
        epochs_done: usize,
        max_epochs: usize,
        still_running: bool,
    ) -> Result<AfterEpoch> {
        // Only a run a search queued stops at rungs (a plain spec may train the same config in full).
        let searched: bool = tx.query_row(
            "SELECT search IS NOT NULL FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        if !searched {
            if Store::in_search(tx, hash)? {
                // Its full epochs may complete rungs of a search that has the same config.
                if settle_tx(tx)? > 0 {
                    pause_in_decision();
                }
            }
            return Ok(AfterEpoch::Continue);
        }
        let mut decided = settle_tx(tx)?;
        let mut after = AfterEpoch::Continue;
        let target = Store::target_epochs(tx, hash)?;
        if still_running && epochs_done < max_epochs && target.is_none_or(|t| t <= epochs_done) {
            super::status::set_status(tx, run_id, RunStatus::Running, RunStatus::Paused)?;
            decided += settle_tx(tx)?;
            let status: RunStatus =
                tx.query_row("SELECT status FROM runs WHERE id = ?1", [run_id], |r| {
                    r.get(0)
                })?;
            after = if status == RunStatus::Pruned {
                AfterEpoch::Pruned
            } else {
                AfterEpoch::Paused
            };
        }
        if decided > 0 {
            pause_in_decision();
        }
        Ok(after)
    }

    /// Decide every rung of this store that can be decided, and prune what waits for nothing, in one
    /// write transaction (after a merge, or before a sweep starts). Returns how many rungs were decided.
    pub fn settle(&self) -> Result<usize> {
        if self.version() < 4 {
            return Ok(0);
        }
        self.at((|| {
            let tx = self.write_tx()?;
            let n = settle_tx(&tx)?;
            tx.commit()?;
            Ok(n)
        })())
    }

    /// Where a search stands in this store.
    pub fn search_progress(&self, search: &str) -> Result<SearchProgress> {
        if self.version() < 4 {
            return Ok(SearchProgress::default());
        }
        let conn = self.connection();
        let q = |sql: &str| -> Result<usize> {
            let n: i64 = self.at(conn
                .query_row(sql, [search], |r| r.get(0))
                .map_err(Error::from))?;
            Ok(n.max(0) as usize)
        };
        Ok(SearchProgress {
            undecided: q(
                "SELECT count(*) FROM (SELECT DISTINCT bracket, rung FROM rung_members
                 WHERE search = ?1 AND decided_at IS NULL)",
            )?,
            running: q(
                "SELECT count(*) FROM runs r WHERE r.status = 'running' AND r.deleted_at IS NULL
                 AND r.config_hash IN (SELECT config_hash FROM rung_members WHERE search = ?1)",
            )?,
            claimable: q("SELECT count(*) FROM runs r WHERE r.deleted_at IS NULL
                 AND r.config_hash IN (SELECT config_hash FROM rung_members WHERE search = ?1)
                 AND (r.status IN ('pending', 'interrupted') OR (r.status = 'paused' AND EXISTS (
                     SELECT 1 FROM rung_members m WHERE m.config_hash = r.config_hash
                     AND m.decided_at IS NULL AND m.epochs > r.epochs_done)))")?,
            missing: q(
                "SELECT count(DISTINCT m.config_hash) FROM rung_members m WHERE m.search = ?1
                 AND m.decided_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.config_hash = m.config_hash)",
            )?,
            failed: q(
                "SELECT count(*) FROM runs r WHERE r.status = 'failed' AND r.deleted_at IS NULL
                 AND r.config_hash IN (SELECT config_hash FROM rung_members m WHERE m.search = ?1
                                       AND m.decided_at IS NULL)",
            )?,
        })
    }

    /// Every rung of a search, in order, with its runs and what was decided.
    pub fn rungs(&self, search: &str) -> Result<Vec<RungState>> {
        if self.version() < 4 {
            return Ok(Vec::new());
        }
        self.at(self.rungs_inner(search))
    }

    fn rungs_inner(&self, search: &str) -> Result<Vec<RungState>> {
        let conn = self.connection();
        // A search a spec plans but this store has not recorded yet has no rungs here.
        let Some((experiment, metric)): Option<(String, String)> = conn
            .query_row(
                "SELECT experiment, metric FROM searches WHERE search = ?1",
                [search],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        else {
            return Ok(Vec::new());
        };
        // Each member's run is the search's own (a member of its experiment); a store where another
        // experiment trained the config but this search has not queued it yet shows that run.
        let mut stmt = conn.prepare(&format!(
            "SELECT m.bracket, m.rung, m.epochs, m.config_hash, m.value, m.place, m.promoted,
                    m.decided_at IS NOT NULL, r.id, coalesce(x.name, r.name), r.status, r.epochs_done
             FROM rung_members m
             LEFT JOIN runs r ON r.id = (
                 SELECT y.id FROM runs y LEFT JOIN {members} z ON z.run_id = y.id AND z.experiment = ?2
                 WHERE y.config_hash = m.config_hash AND {current}
                 ORDER BY z.run_id IS NOT NULL DESC, y.id DESC LIMIT 1)
             LEFT JOIN {members} x ON x.run_id = r.id AND x.experiment = ?2
             WHERE m.search = ?1
             ORDER BY m.bracket, m.rung, m.place IS NULL, m.place, m.config_hash",
            members = self.members(),
            current = self.current("y"),
        ))?;
        let mut out: Vec<RungState> = Vec::new();
        let mut rows = stmt.query(params![search, experiment])?;
        while let Some(r) = rows.next()? {
            let (bracket, rung, epochs): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let member = RungMember {
                config_hash: r.get(3)?,
                value: r.get(4)?,
                place: r.get(5)?,
                promoted: r.get::<_, Option<i64>>(6)?.map(|p| p == 1),
                run_id: r.get(8)?,
                name: r.get(9)?,
                status: r.get(10)?,
                epochs_done: r.get(11)?,
            };
            let decided: bool = r.get(7)?;
            match out.last_mut() {
                Some(last) if last.bracket == bracket && last.rung == rung => {
                    last.members.push(member);
                    last.decided &= decided;
                }
                _ => out.push(RungState {
                    search: search.to_string(),
                    experiment: experiment.clone(),
                    bracket,
                    rung,
                    epochs,
                    metric: metric.clone(),
                    members: vec![member],
                    decided,
                }),
            }
        }
        Ok(out)
    }

    /// The searches of an experiment name, oldest first.
    pub fn searches_of(&self, experiment: &str) -> Result<Vec<String>> {
        if self.version() < 4 {
            return Ok(Vec::new());
        }
        let t = self.select(
            "SELECT search FROM searches WHERE experiment = ?1 ORDER BY created_at, search",
            &[&experiment],
        )?;
        Ok(t.rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(rusqlite::types::Value::Text(s)) => Some(s),
                _ => None,
            })
            .collect())
    }
}

/// Test hook: hold an epoch's write transaction open this many milliseconds after it decided a rung and
/// before it commits, so that a test can kill the process in the middle of a promotion. Not for normal use.
pub(crate) const PAUSE_IN_DECISION_ENV: &str = "MLP_RUNNER_PAUSE_IN_DECISION_MS";

fn pause_in_decision() {
    if let Some(ms) = std::env::var(PAUSE_IN_DECISION_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// [`settle_tx`] inside the caller's transaction (the queue's).
pub(crate) fn settle_in(tx: &Transaction<'_>) -> Result<usize> {
    settle_tx(tx)
}

fn has_searches(conn: &rusqlite::Connection) -> Result<bool> {
    super::integrity::has_column(conn, "rung_members", "config_hash")
}

/// What a decision reads of a member: its latest run in the store.
enum Standing {
    /// No run with this config in this store (another shard's): the rung waits.
    Absent,
    /// Not at the rung's epochs yet, or failed (retried later): the rung waits.
    Waiting,
    /// Diverged, deleted, or without a finite metric there: it cannot be promoted.
    Out,
    /// Its metric and the partner metric at the rung's epochs.
    Scored(f64, f64),
}

fn standing(tx: &Transaction<'_>, hash: &str, epochs: i64, metric: Metric) -> Result<Standing> {
    let run: Option<(i64, RunStatus, i64, bool)> = tx
        .query_row(
            "SELECT id, status, epochs_done, deleted_at IS NOT NULL FROM runs WHERE config_hash = ?1
             ORDER BY deleted_at IS NULL DESC, id DESC LIMIT 1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((id, status, done, deleted)) = run else {
        return Ok(Standing::Absent);
    };
    if deleted || status == RunStatus::Diverged {
        return Ok(Standing::Out);
    }
    if done < epochs {
        return Ok(Standing::Waiting);
    }
    // Column names come from the fixed metric list, never from input.
    let (m, p) = (metric.as_str(), metric.partner().as_str());
    let scores: Option<(Option<f64>, Option<f64>)> = tx
        .query_row(
            &format!("SELECT {m}, {p} FROM epochs WHERE run_id = ?1 AND epoch = ?2"),
            params![id, epochs],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match scores {
        Some((Some(a), Some(b))) if a.is_finite() && b.is_finite() => Standing::Scored(a, b),
        Some(_) => Standing::Out,
        None => Standing::Waiting,
    })
}

/// Decide every decidable rung, repeatedly (a promotion may complete the next rung at once, when its runs
/// have those epochs already), then prune. Returns the rungs decided.
fn settle_tx(tx: &Transaction<'_>) -> Result<usize> {
    if !has_searches(tx)? {
        return Ok(0);
    }
    let mut decided = 0;
    loop {
        let open: Vec<(String, i64, i64, i64, String, i64, String)> = tx
            .prepare(
                "SELECT DISTINCT m.search, m.bracket, m.rung, m.epochs, s.metric, s.eta, s.schedule
                 FROM rung_members m JOIN searches s ON s.search = m.search
                 WHERE m.decided_at IS NULL ORDER BY m.search, m.bracket, m.rung",
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
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut made = 0;
        for (search, bracket, rung, epochs, metric, eta, schedule) in open {
            let metric = Metric::parse(&metric).ok_or_else(|| {
                Error::internal(format!("search {search}: unknown metric {metric}"))
            })?;
            let hashes: Vec<String> = tx
                .prepare(
                    "SELECT config_hash FROM rung_members WHERE search = ?1 AND bracket = ?2 AND rung = ?3
                     ORDER BY config_hash",
                )?
                .query_map(params![search, bracket, rung], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut members = Vec::with_capacity(hashes.len());
            let mut complete = true;
            for h in &hashes {
                match standing(tx, h, epochs, metric)? {
                    Standing::Absent | Standing::Waiting => {
                        complete = false;
                        break;
                    }
                    Standing::Out => members.push(Member {
                        config_hash: h.clone(),
                        scores: None,
                    }),
                    Standing::Scored(a, b) => members.push(Member {
                        config_hash: h.clone(),
                        scores: Some((a, b)),
                    }),
                }
            }
            if !complete {
                continue;
            }
            let next: Option<i64> = serde_json::from_str::<Vec<Vec<i64>>>(&schedule)
                .ok()
                .and_then(|s| {
                    s.get(bracket as usize)
                        .and_then(|b| b.get(rung as usize + 1).copied())
                });
            let at = now();
            for (m, (place, promoted)) in members.iter().zip(decide(&members, metric, eta as usize))
            {
                let promoted = promoted && next.is_some();
                tx.execute(
                    "UPDATE rung_members SET value = ?5, place = ?6, promoted = ?7, decided_at = ?8
                     WHERE search = ?1 AND bracket = ?2 AND rung = ?3 AND config_hash = ?4",
                    params![
                        search,
                        bracket,
                        rung,
                        m.config_hash,
                        m.scores.map(|s| s.0),
                        place as i64,
                        promoted,
                        at
                    ],
                )?;
                if let (true, Some(next)) = (promoted, next) {
                    tx.execute(
                        "INSERT OR IGNORE INTO rung_members (search, bracket, rung, config_hash, epochs)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![search, bracket, rung + 1, m.config_hash, next],
                    )?;
                }
            }
            made += 1;
        }
        decided += made;
        if made == 0 {
            break;
        }
    }
    prune(tx)?;
    Ok(decided)
}

/// End as `pruned` every paused run that is in no undecided rung: its checkpoint (the weights at its last
/// rung's epochs) becomes its final weights.
fn prune(tx: &Transaction<'_>) -> Result<()> {
    let ids: Vec<i64> = tx
        .prepare(
            "SELECT id FROM runs r WHERE status = 'paused' AND NOT EXISTS (
                SELECT 1 FROM rung_members m WHERE m.config_hash = r.config_hash AND m.decided_at IS NULL)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        super::status::set_status(tx, id, RunStatus::Paused, RunStatus::Pruned)?;
        let moved = tx.execute(
            "UPDATE weights SET kind = ?2 WHERE run_id = ?1 AND kind = ?3",
            params![
                id,
                WeightsKind::Final.as_str(),
                WeightsKind::Checkpoint.as_str()
            ],
        )?;
        if moved == 0 {
            return Err(Error::internal(format!(
                "run {id} was paused without a checkpoint to end with"
            )));
        }
        tx.execute(
            "UPDATE runs SET weights_sha256 = checkpoint_sha256, finished_at = ?2, checkpoint_epoch = NULL,
                checkpoint_rng = NULL, checkpoint_sha256 = NULL, checkpoint_state_sha256 = NULL, error = NULL
             WHERE id = ?1",
            params![id, now()],
        )?;
        // A pruned run will not resume: its optimizer state goes with its checkpoint.
        tx.execute("DELETE FROM checkpoint_state WHERE run_id = ?1", [id])?;
        tx.execute(
            "UPDATE runs SET result_sha256 = ?2 WHERE id = ?1",
            params![id, super::integrity::result_sha256(tx, id)?],
        )?;
    }
    Ok(())
}
