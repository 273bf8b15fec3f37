//! Running an experiment against the results store: check every run against its data before anything is
//! written, decide which runs are already done, then train the others one by one, each epoch stored as it ends.

use std::io::Write;
use std::path::Path;

use crate::data::DataCache;
use crate::envelope::{Envelope, hostname};
use crate::error::{Error, Result, SpecError};
use crate::model::Snapshot;
use crate::spec::{self, Experiment, PlannedRun};
use crate::store::Store;
use crate::train::{Control, EpochMetrics, Observer, Outcome, train};

/// What to do with one planned run.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Train it; `reuse` is an unfinished row of the same config to take over.
    Train { reuse: Option<i64> },
    /// Already done (or being trained by a live process): the run id and its status.
    Skip { run_id: i64, status: String },
}

/// Check each run's config against the data it names (input width, limits, batch size), loading the data.
/// Errors name the spec file, the line and key, and the run.
pub fn check_data(exp: &Experiment, cache: &mut DataCache) -> Result<()> {
    for run in &exp.runs {
        let c = &run.config;
        let ds = cache.get(&c.data.dir, c.data.format)?;
        c.validate_against_data(ds.train.pixels(), ds.train.len(), ds.test.len())
            .map_err(|(key, msg)| {
                Error::Spec(SpecError {
                    file: exp.path.clone(),
                    line: spec::locate_key(&exp.text, key),
                    key: Some(key.to_string()),
                    msg: format!("{msg} (run {})", run.name),
                })
            })?;
    }
    Ok(())
}

fn owner_alive(pid: Option<i64>, host: &str) -> bool {
    match pid {
        Some(pid) if host == hostname() => {
            pid as u32 != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        }
        // A run owned by another host cannot be checked from here: assume it is alive.
        Some(_) => true,
        None => false,
    }
}

/// Decide, for each run, whether it must be trained. Without a store every run is to train.
pub fn plan(exp: &Experiment, store: Option<&Store>, force: bool) -> Result<Vec<Decision>> {
    exp.runs
        .iter()
        .map(|run| {
            let Some(store) = store else {
                return Ok(Decision::Train { reuse: None });
            };
            Ok(match store.latest_with_config(&run.config.hash())? {
                None => Decision::Train { reuse: None },
                Some(prev) => match prev.status.as_str() {
                    "completed" | "diverged" if !force => Decision::Skip {
                        run_id: prev.id,
                        status: prev.status,
                    },
                    "completed" | "diverged" => Decision::Train { reuse: None },
                    "running" if owner_alive(prev.pid, &prev.host) => Decision::Skip {
                        run_id: prev.id,
                        status: prev.status,
                    },
                    _ => Decision::Train {
                        reuse: Some(prev.id),
                    },
                },
            })
        })
        .collect()
}

/// Options of a sweep.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Re-train runs already completed (a new row; the old one is kept).
    pub force: bool,
}

/// One line of the end-of-sweep report.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub name: String,
    pub status: String,
    pub last: Option<EpochMetrics>,
    /// Wall seconds of the run's epochs (0 for a skipped run).
    pub seconds: f64,
    pub skipped: bool,
}

/// Stores a run's progress: initial weights at the start, each epoch in one transaction, and with the last
/// epoch the final weights and status.
struct StoreObserver<'a> {
    store: &'a Store,
    run_id: i64,
    epochs: usize,
    dataset_sha256: String,
    out: &'a mut dyn Write,
    last: Option<EpochMetrics>,
    seconds: f64,
}

impl Observer for StoreObserver<'_> {
    fn on_start(&mut self, initial: &Snapshot) -> Result<()> {
        self.store
            .start_run(self.run_id, &self.dataset_sha256, initial)
    }

    fn on_epoch(&mut self, m: &EpochMetrics, params: &Snapshot) -> Result<Control> {
        let finish = if m.diverged() {
            Some(("diverged", params))
        } else if m.epoch == self.epochs {
            Some(("completed", params))
        } else {
            None
        };
        self.store.record_epoch(self.run_id, m, finish)?;
        let _ = writeln!(self.out, "  {}", epoch_line(m, self.epochs));
        self.seconds += m.seconds;
        self.last = Some(m.clone());
        Ok(Control::Continue)
    }
}

/// `epoch 2/3  train loss 0.1234 acc 96.52%  test loss 0.1301 acc 96.10%  1.52 s`
pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    format!(
        "epoch {}/{epochs}  train loss {:.4} acc {:.2}%  test loss {:.4} acc {:.2}%  {:.2} s{}",
        m.epoch,
        m.train_loss,
        100.0 * m.train_acc,
        m.test_loss,
        100.0 * m.test_acc,
        m.seconds,
        if m.diverged() {
            "  DIVERGED (loss is not finite)"
        } else {
            ""
        }
    )
}

/// Train every run of `exp` that is not done yet into the store at `db`. Bad input is reported before the
/// store is opened, so nothing is written for a spec or data that cannot run.
pub fn run(
    exp: &Experiment,
    db: &Path,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Vec<RunReport>> {
    let mut cache = DataCache::default();
    check_data(exp, &mut cache)?;
    let store = Store::open(db)?;
    let decisions = plan(exp, Some(&store), opts.force)?;
    let todo = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Train { .. }))
        .count();
    let _ = writeln!(
        out,
        "experiment {}: {} runs, {} to train, {} already done -> {}",
        exp.name,
        exp.runs.len(),
        todo,
        exp.runs.len() - todo,
        db.display()
    );
    let mut reports = Vec::new();
    let mut pending = Vec::new();
    // An experiment row records an invocation that trains something; Train decisions imply todo > 0.
    let experiment_id = if todo > 0 {
        store.create_experiment(exp)?
    } else {
        0
    };
    let env = Envelope::current();
    for (run, d) in exp.runs.iter().zip(&decisions) {
        match d {
            Decision::Train { reuse } => {
                pending.push((run, store.insert_run(experiment_id, run, &env, *reuse)?));
            }
            Decision::Skip { run_id, status } => reports.push(RunReport {
                run_id: *run_id,
                name: run.name.clone(),
                status: status.clone(),
                last: None,
                seconds: 0.0,
                skipped: true,
            }),
        }
    }
    let total = pending.len();
    for (i, (run, run_id)) in pending.into_iter().enumerate() {
        let _ = writeln!(out, "[{}/{total}] run {run_id} {}", i + 1, run.name);
        reports.push(train_one(&store, &mut cache, run, run_id, out)?);
    }
    Ok(reports)
}

fn train_one(
    store: &Store,
    cache: &mut DataCache,
    run: &PlannedRun,
    run_id: i64,
    out: &mut dyn Write,
) -> Result<RunReport> {
    let c = &run.config;
    let dataset_sha256 = cache.sha256(
        &c.data.dir,
        c.data.format,
        c.data.limit_train,
        c.data.limit_test,
    )?;
    let data = cache.get(&c.data.dir, c.data.format)?;
    let mut obs = StoreObserver {
        store,
        run_id,
        epochs: c.train.epochs,
        dataset_sha256,
        out,
        last: None,
        seconds: 0.0,
    };
    let status = match train(c, data, &mut obs) {
        Ok(Outcome::Completed(_)) => "completed".to_string(),
        Ok(Outcome::Diverged { epoch, .. }) => {
            let _ = writeln!(
                obs.out,
                "  run {run_id} diverged at epoch {epoch}; the sweep goes on"
            );
            "diverged".to_string()
        }
        Ok(Outcome::Stopped { .. }) => {
            store.end_run(run_id, "interrupted", None)?;
            "interrupted".to_string()
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = writeln!(obs.out, "  run {run_id} failed: {msg}");
            // Best effort: if the store itself failed, this may fail too; the error is reported either way.
            let _ = store.end_run(run_id, "failed", Some(&msg));
            "failed".to_string()
        }
    };
    Ok(RunReport {
        run_id,
        name: run.name.clone(),
        status,
        last: obs.last,
        seconds: obs.seconds,
        skipped: false,
    })
}
