//! The owner's writes of a run it claimed: its start (initial weights), each epoch with its checkpoint,
//! its end, and its heartbeat. Each is one write transaction that first checks, under the write lock,
//! that the run is still `running` under the writer's fencing token (see [`super::queue`]); a writer that
//! lost the run changes nothing and gets [`Error::Lost`] naming the new owner.

use rusqlite::{OptionalExtension, Transaction, params};

use super::integrity::{metrics_sha256, result_sha256};
use super::queue::OwnerRow;
use super::search::AfterEpoch;
use super::status::set_status;
use super::{RunStatus, Store, WeightsKind, now, unix_now};
use crate::core::model::Snapshot;
use crate::core::train::{Checkpoint, EpochMetrics};
use crate::error::{Error, Result};

impl Store {
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

    /// Store the initial weights of a run this process owns, its dataset's hash and where the data was
    /// read from (an absolute path: `verify` finds it from any folder), in one fenced transaction.
    pub(crate) fn start_run(
        &self,
        run_id: i64,
        token: i64,
        dataset_sha256: &str,
        data_path: &str,
        initial: &Snapshot,
    ) -> Result<()> {
        self.at(self.fenced(run_id, token, |tx| {
            tx.execute(
                "UPDATE runs SET started_at = ?2, dataset_sha256 = ?3, init_weights_sha256 = ?4, data_path = ?5
                 WHERE id = ?1",
                params![run_id, now(), dataset_sha256, initial.sha256(), data_path],
            )?;
            // Initial weights are a pure function of the config: kept as their hash alone unless the spec
            // asked for them (`[store] initial_weights = true`).
            let keep: bool =
                tx.query_row("SELECT initial_stored FROM runs WHERE id = ?1", [run_id], |r| r.get(0))?;
            if keep {
                insert_weights(tx, run_id, WeightsKind::Initial, 0, initial)?;
            }
            Ok(())
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
    ) -> Result<AfterEpoch> {
        let mut after = AfterEpoch::Continue;
        self.at(self.fenced(run_id, token, |tx| {
            tx.execute(
                "INSERT INTO epochs (run_id, epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds,
                    val_loss, val_acc, learning_rate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![run_id, m.epoch as i64, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds,
                    m.train_seconds, m.val_loss, m.val_acc, m.learning_rate],
            )?;
            tx.execute(
                "UPDATE runs SET epochs_done = ?2, train_loss = ?3, train_acc = ?4, test_loss = ?5, test_acc = ?6,
                    seconds = (SELECT SUM(seconds) FROM epochs WHERE run_id = ?1), metrics_sha256 = ?7,
                    heartbeat_at = ?8, val_loss = ?9, val_acc = ?10 WHERE id = ?1",
                params![
                    run_id,
                    m.epoch as i64,
                    m.train_loss,
                    m.train_acc,
                    m.test_loss,
                    m.test_acc,
                    metrics_sha256(tx, run_id)?,
                    unix_now(),
                    m.val_loss,
                    m.val_acc
                ],
            )?;
            insert_classes(tx, run_id, m)?;
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
                    tx.execute("DELETE FROM checkpoint_state WHERE run_id = ?1", [run_id])?;
                    set_status(tx, run_id, RunStatus::Running, status)?;
                    let diverged_epoch = (status == RunStatus::Diverged).then_some(m.epoch as i64);
                    tx.execute(
                        "UPDATE runs SET weights_sha256 = ?2, diverged_epoch = ?3, finished_at = ?4, error = NULL,
                            checkpoint_epoch = NULL, checkpoint_rng = NULL, checkpoint_sha256 = NULL,
                            checkpoint_state_sha256 = NULL WHERE id = ?1",
                        params![run_id, params.sha256(), diverged_epoch, now()],
                    )?;
                    if let Some(errors) = &checkpoint.errors {
                        insert_errors(tx, run_id, errors)?;
                    }
                    if let Some(reason) = &checkpoint.stopped {
                        tx.execute(
                            "UPDATE runs SET stopped_epoch = ?2, stop_reason = ?3 WHERE id = ?1",
                            params![run_id, m.epoch as i64, reason],
                        )?;
                    }
                    tx.execute(
                        "UPDATE runs SET result_sha256 = ?2 WHERE id = ?1",
                        params![run_id, result_sha256(tx, run_id)?],
                    )?;
                }
                None => {
                    insert_weights(tx, run_id, WeightsKind::Checkpoint, m.epoch, params)?;
                    insert_state(tx, run_id, m.epoch, checkpoint.state.as_ref())?;
                    let s = checkpoint.shuffle;
                    tx.execute(
                        "UPDATE runs SET checkpoint_epoch = ?2, checkpoint_rng = ?3, checkpoint_sha256 = ?4,
                            checkpoint_state_sha256 = ?5 WHERE id = ?1",
                        params![
                            run_id,
                            m.epoch as i64,
                            format!("{}:{}:{}", s.seed, s.stream, s.word_pos),
                            params.sha256(),
                            checkpoint.state.as_ref().map(Snapshot::sha256)
                        ],
                    )?;
                }
            }
            // A run of a search: decide the rungs this epoch completes, and pause the run at its rung.
            let (hash, epochs): (String, i64) = tx.query_row(
                "SELECT config_hash, epochs FROM runs WHERE id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            after = Store::after_epoch(
                tx,
                run_id,
                &hash,
                m.epoch,
                epochs.max(0) as usize,
                finish.is_none(),
            )?;
            Ok(())
        }))?;
        Ok(after)
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

/// Write a checkpoint's optimizer state (replacing the previous checkpoint's; none for plain SGD).
fn insert_state(
    tx: &Transaction<'_>,
    run_id: i64,
    epoch: usize,
    state: Option<&Snapshot>,
) -> Result<()> {
    tx.execute("DELETE FROM checkpoint_state WHERE run_id = ?1", [run_id])?;
    let Some(s) = state else {
        return Ok(());
    };
    insert_tensors(
        tx,
        "INSERT INTO checkpoint_state (run_id, epoch, layer, param, shape, dtype, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[&run_id, &(epoch as i64)],
        s,
    )
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
    insert_tensors(
        tx,
        "INSERT INTO weights (run_id, kind, epoch, layer, param, shape, dtype, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        &[&run_id, &kind.as_str(), &(epoch as i64)],
        s,
    )
}

/// Insert a snapshot's tensors, one row each, with `insert`: an INSERT whose first parameters are
/// `leading` and whose last five a tensor's layer, param, shape (JSON), dtype and data.
fn insert_tensors(
    tx: &Transaction<'_>,
    insert: &str,
    leading: &[&dyn rusqlite::ToSql],
    s: &Snapshot,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(insert)?;
    let dtype = s.dtype.as_str();
    for t in &s.tensors {
        let (layer, shape) = (
            t.layer as i64,
            serde_json::Value::from(t.shape.clone()).to_string(),
        );
        let mut values: Vec<&dyn rusqlite::ToSql> = leading.to_vec();
        values.extend([
            &layer as &dyn rusqlite::ToSql,
            &t.param,
            &shape,
            &dtype,
            &t.data,
        ]);
        stmt.execute(&*values)?;
    }
    Ok(())
}

/// Where a completed run's final weights err: the confusion matrices' cells above 0 and every test
/// sample they get wrong.
fn insert_errors(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    errors: &crate::core::confusion::Errors,
) -> Result<()> {
    tx.execute("DELETE FROM confusion WHERE run_id = ?1", [run_id])?;
    tx.execute("DELETE FROM misclassified WHERE run_id = ?1", [run_id])?;
    let mut cell = tx.prepare(
        "INSERT INTO confusion (run_id, split, actual, predicted, count) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (split, c) in [
        ("test", Some(&errors.test)),
        ("validation", errors.validation.as_ref()),
    ] {
        let Some(c) = c else { continue };
        for actual in 0..c.classes {
            for predicted in 0..c.classes {
                let n = c.count(actual, predicted);
                if n > 0 {
                    cell.execute(params![
                        run_id,
                        split,
                        actual as i64,
                        predicted as i64,
                        n as i64
                    ])?;
                }
            }
        }
    }
    let mut miss = tx.prepare(
        "INSERT INTO misclassified (run_id, sample, actual, predicted, confidence) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for m in &errors.misclassified {
        miss.execute(params![
            run_id,
            m.sample as i64,
            i64::from(m.actual),
            i64::from(m.predicted),
            m.confidence
        ])?;
    }
    Ok(())
}

/// An epoch's samples and correct predictions per class, on the test and validation splits.
fn insert_classes(tx: &rusqlite::Transaction<'_>, run_id: i64, m: &EpochMetrics) -> Result<()> {
    let mut row = tx.prepare_cached(
        "INSERT INTO epoch_classes (run_id, epoch, split, class, samples, correct) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (split, counts) in [("test", &m.test_classes), ("validation", &m.val_classes)] {
        for (class, [samples, correct]) in counts.iter().flatten().enumerate() {
            row.execute(params![
                run_id,
                m.epoch as i64,
                split,
                class as i64,
                *samples as i64,
                *correct as i64
            ])?;
        }
    }
    Ok(())
}
