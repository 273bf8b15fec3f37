//! Running an experiment against the results store: check every run against its data before anything is
//! written, queue the runs that are not done, then claim and train them one at a time per worker (several
//! workers with `--jobs`, several processes on one database), each epoch stored with its checkpoint.
//!
//! Any number of processes may run the same spec on the same database: every run is claimed in one
//! transaction, so each is trained once; an interrupted run (Ctrl-C, kill, a dead owner) is resumed from its
//! last stored epoch by whoever claims it next, and finishes bit-identical to an uninterrupted run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::data::DataCache;
use crate::envelope::Envelope;
use crate::error::{Error, Result, SpecError};
use crate::kernel::Kernel;
use crate::merge::Shard;
use crate::model::Snapshot;
use crate::progress::{Progress, RunBar};
use crate::spec::{self, Experiment, PlannedRun};
use crate::store::{Claim, Queued, Store, owner_alive};
use crate::train::{Checkpoint, Control, EpochMetrics, Observer, Outcome, train};

/// How often a training process refreshes its runs' heartbeat (besides at every epoch).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);

/// Test hook: sleep this many milliseconds after each stored epoch (lets tests kill a process at an epoch
/// boundary). Not for normal use.
pub const PAUSE_ENV: &str = "MLP_RUNNER_PAUSE_AFTER_EPOCH_MS";

/// What `runner plan` shows for a planned run.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// To train; `resume` is an unfinished row that will be claimed (and resumed if it has a checkpoint).
    Train { resume: Option<(i64, String)> },
    /// Done, or being trained by a live process: the run id and its status.
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

/// Where each run of `exp` stands in `store` (without a store, every run is to train). Read-only.
pub fn plan(exp: &Experiment, store: Option<&Store>) -> Result<Vec<Decision>> {
    exp.runs
        .iter()
        .map(|run| {
            let Some(store) = store else {
                return Ok(Decision::Train { resume: None });
            };
            Ok(match store.latest_with_config(&run.config.hash())? {
                None => Decision::Train { resume: None },
                Some(prev) => match prev.status.as_str() {
                    "completed" | "diverged" => Decision::Skip {
                        run_id: prev.id,
                        status: prev.status,
                    },
                    "running" if owner_alive(prev.pid, &prev.host) => Decision::Skip {
                        run_id: prev.id,
                        status: prev.status,
                    },
                    _ => Decision::Train {
                        resume: Some((prev.id, prev.status)),
                    },
                },
            })
        })
        .collect()
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct Options {
    /// Train runs again even when completed (a new row; the old one is kept).
    pub force: bool,
    /// Runs trained at once in this process (one thread each).
    pub jobs: usize,
    /// A `running` run whose owner has not been heard of for this long is taken over.
    pub stale_after: Duration,
    /// Train only this shard's runs (and say where the shard came from).
    pub shard: Option<(Shard, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            jobs: 1,
            stale_after: Duration::from_secs(600),
            shard: None,
        }
    }
}

/// One line of the end-of-sweep report: the latest row of each run of the spec.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub name: String,
    pub status: String,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub seconds: Option<f64>,
    /// Trained (or resumed) by this invocation.
    pub trained_here: bool,
    /// The values the sweep set for this run.
    pub overrides: Vec<(String, toml::Value)>,
}

/// Train every run of `exp` that is not done into the store at `db`. Bad input is reported before the
/// store is opened, so nothing is written for a spec or data that cannot run. `stop` (set by Ctrl-C) makes
/// every worker stop at once, leaving its run `interrupted` with its completed epochs.
pub fn run(
    exp: &Experiment,
    db: &Path,
    opts: &Options,
    progress: &mut Progress,
    stop: &AtomicBool,
) -> Result<Vec<RunReport>> {
    let mut cache = DataCache::default();
    check_data(exp, &mut cache)?;
    let mut dataset_sha = HashMap::new();
    for run in &exp.runs {
        let d = &run.config.data;
        let sha = cache.sha256(&d.dir, d.format, d.limit_train, d.limit_test)?;
        dataset_sha.insert(run.config.hash(), sha);
    }

    let sharded;
    let exp = match &opts.shard {
        None => exp,
        Some((shard, from)) => {
            let mut mine = exp.clone();
            mine.runs.retain(|r| shard.contains(&r.config.hash()));
            progress.log(&format!(
                "shard {}/{} ({from}): {} of the {} runs",
                shard.index,
                shard.count,
                mine.runs.len(),
                exp.runs.len()
            ));
            sharded = mine;
            &sharded
        }
    };
    let store = Store::open(db)?;
    let queued = store.enqueue(exp, opts.force)?;
    let count = |f: &dyn Fn(&Queued) -> bool| queued.iter().filter(|q| f(q)).count();
    progress.log(&format!(
        "experiment {}: {} runs: {} new, {} to resume or retry, {} running elsewhere, {} already done -> {}",
        exp.name,
        exp.runs.len(),
        count(&|q| matches!(q, Queued::Queued { new: true, .. })),
        count(&|q| matches!(q, Queued::Queued { new: false, status, .. } if status != "running")),
        count(&|q| matches!(q, Queued::Queued { status, .. } if status == "running")),
        count(&|q| matches!(q, Queued::Done { .. })),
        db.display()
    ));

    progress.start_sweep(
        queued
            .iter()
            .filter(|q| matches!(q, Queued::Queued { .. }))
            .count() as u64,
    );
    let progress: &Progress = progress;
    let runs: HashMap<String, &PlannedRun> =
        exp.runs.iter().map(|r| (r.config.hash(), r)).collect();
    let hashes: Vec<String> = exp.runs.iter().map(|r| r.config.hash()).collect();
    let ctx = Worker {
        runs: &runs,
        hashes: &hashes,
        cache: &cache,
        dataset_sha: &dataset_sha,
        opts,
        progress,
        stop,
    };
    let mut trained = Vec::new();
    // More workers than runs to train would only idle.
    let jobs = opts.jobs.min(hashes.len()).max(1);
    if jobs == 1 {
        trained = ctx.work(&store)?;
    } else {
        let results: Vec<Result<Vec<i64>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..jobs)
                .map(|_| s.spawn(|| ctx.work(&Store::open(db)?)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Usage("a worker thread panicked".into())))
                })
                .collect()
        });
        for r in results {
            trained.extend(r?);
        }
    }

    let mut reports = Vec::new();
    for hash in &hashes {
        if let Some(s) = store.latest_summary(hash)? {
            reports.push(RunReport {
                trained_here: trained.contains(&s.id),
                run_id: s.id,
                name: s.name,
                status: s.status,
                test_acc: s.test_acc,
                test_loss: s.test_loss,
                seconds: s.seconds,
                overrides: runs
                    .get(hash)
                    .map(|r| r.overrides.clone())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(reports)
}

/// What every worker of one sweep shares.
struct Worker<'a> {
    runs: &'a HashMap<String, &'a PlannedRun>,
    hashes: &'a [String],
    cache: &'a DataCache,
    dataset_sha: &'a HashMap<String, String>,
    opts: &'a Options,
    progress: &'a Progress,
    stop: &'a AtomicBool,
}

impl Worker<'_> {
    /// Claim and train runs until none is left (or `stop`); returns the ids trained.
    fn work(&self, store: &Store) -> Result<Vec<i64>> {
        // The envelope depends on the run (its kernel); a hash not of this spec is reported below.
        let env = |hash: &str| match self.runs.get(hash) {
            Some(run) => Envelope::for_run(&run.config),
            None => Envelope::with_kernel(Kernel::Gemm),
        };
        let mut done = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(claim) = store.claim(self.hashes, &env, self.opts.stale_after)? else {
                break;
            };
            let run = self.runs.get(&claim.config_hash).ok_or_else(|| {
                Error::Usage(format!("claimed run {} is not of this spec", claim.id))
            })?;
            done.push(claim.id);
            self.train_one(store, run, &claim)?;
        }
        Ok(done)
    }

    fn train_one(&self, store: &Store, run: &PlannedRun, claim: &Claim) -> Result<()> {
        let c = &run.config;
        let hash = &claim.config_hash;
        let data = self
            .cache
            .loaded(&c.data.dir, c.data.format)
            .ok_or_else(|| Error::Usage(format!("data {} was not loaded", c.data.dir)))?;
        let run_id = claim.id;
        match &claim.checkpoint {
            Some(cp) => self.progress.log(&format!(
                "run {run_id} {}: resuming after epoch {}/{}",
                run.name, cp.epoch, c.train.epochs
            )),
            None => self
                .progress
                .log(&format!("run {run_id} {}: training", run.name)),
        }
        let train_n = c.data.limit_train.unwrap_or(data.train.len());
        let batches = if c.train.drop_last {
            train_n / c.train.batch_size
        } else {
            train_n.div_ceil(c.train.batch_size)
        };
        let done = claim.checkpoint.as_ref().map_or(0, |cp| cp.epoch);
        let mut obs = StoreObserver {
            store,
            run_id,
            epochs: c.train.epochs,
            dataset_sha256: self.dataset_sha.get(hash).cloned().unwrap_or_default(),
            progress: self.progress,
            bar: self.progress.run_bar(
                run_id,
                &run.name,
                c.train.epochs,
                done,
                batches,
                c.train.batch_size,
            ),
            stop: self.stop,
            last_beat: Instant::now(),
            pause: std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok()),
        };
        let outcome = train(c, data, &mut obs, claim.checkpoint.as_ref());
        obs.bar.finish();
        self.progress.run_done();
        match outcome {
            Ok(Outcome::Completed(_)) => {}
            Ok(Outcome::Diverged { epoch, .. }) => self.progress.log(&format!(
                "run {run_id}: diverged at epoch {epoch} (the loss is not finite); the sweep goes on"
            )),
            Ok(Outcome::Stopped { epoch }) => {
                store.end_run(run_id, "interrupted", None)?;
                self.progress.log(&format!(
                    "run {run_id}: interrupted with {epoch} epochs stored; `runner resume {run_id}` (or the spec again) resumes it"
                ));
            }
            Err(e) => {
                let msg = e.to_string();
                self.progress.log(&format!("run {run_id}: failed: {msg}"));
                // If the store itself failed this may fail too; the error is reported either way.
                let _ = store.end_run(run_id, "failed", Some(&msg));
            }
        }
        Ok(())
    }
}

/// Stores a run's progress: initial weights at the start, each epoch with its checkpoint in one
/// transaction, and with the last epoch the final weights and status.
struct StoreObserver<'a> {
    store: &'a Store,
    run_id: i64,
    epochs: usize,
    dataset_sha256: String,
    progress: &'a Progress,
    bar: RunBar,
    stop: &'a AtomicBool,
    last_beat: Instant,
    pause: Option<u64>,
}

impl Observer for StoreObserver<'_> {
    fn on_start(&mut self, initial: &Snapshot) -> Result<()> {
        self.store
            .start_run(self.run_id, &self.dataset_sha256, initial)
    }

    fn on_batch(&mut self, epoch: usize, done: usize, _total: usize, loss_sum: f64) -> Control {
        self.bar.batch(epoch, done, loss_sum);
        if self.stop.load(Ordering::Relaxed) {
            return Control::Stop;
        }
        if self.last_beat.elapsed() > HEARTBEAT_EVERY {
            // A missed heartbeat only risks a takeover after `stale_after`; training goes on.
            let _ = self.store.heartbeat(self.run_id);
            self.last_beat = Instant::now();
        }
        Control::Continue
    }

    fn on_epoch(&mut self, m: &EpochMetrics, checkpoint: &Checkpoint) -> Result<Control> {
        let finish = if m.diverged() {
            Some("diverged")
        } else if m.epoch == self.epochs {
            Some("completed")
        } else {
            None
        };
        self.store
            .record_epoch(self.run_id, m, checkpoint, finish)?;
        self.last_beat = Instant::now();
        self.progress.log(&format!(
            "run {} {}",
            self.run_id,
            epoch_line(m, self.epochs)
        ));
        if let Some(ms) = self.pause {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(if self.stop.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        })
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
