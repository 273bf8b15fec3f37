//! Running an experiment against the results store: check every run against its data before anything is
//! written, queue the runs that are not done, then claim and train them one at a time per worker (several
//! workers with `--jobs`, several processes on one database), each epoch stored with its checkpoint.
//!
//! Any number of processes may run the same spec on the same database: every run is claimed in one
//! transaction, so each is trained once; an interrupted run (Ctrl-C, kill, a dead owner) is resumed from its
//! last stored epoch by whoever claims it next, and finishes bit-identical to an uninterrupted run. A
//! heartbeat thread tells other processes that this one is alive; a process that finds its run taken over
//! (it was stopped for longer than `stale_after`) stops training it and leaves the new owner's rows alone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::heartbeat::Heartbeat;
use super::progress::{Progress, RunProgress, RunStart};
use super::spec::{Experiment, PlannedRun};
use crate::core::config::RunConfig;
use crate::core::data::DataCache;
use crate::core::envelope::{Envelope, TrainedWith};
use crate::core::kernel::Kernel;
use crate::core::model::Snapshot;
use crate::core::shard::Shard;
use crate::core::train::{Checkpoint, Control, EpochMetrics, Observer, Outcome, Training};
use crate::error::{Error, ErrorKind, Result, SpecError};
use crate::store::queue::{Claimant, MISSED_HEARTBEATS};
use crate::store::search::AfterEpoch;
use crate::store::{Claim, NewExperiment, NewRun, Owner, Queued, RunStatus, Store};

/// Test hook: sleep this many milliseconds after each stored epoch (lets tests kill or stop a process at
/// an epoch boundary). Not for normal use.
pub(crate) const PAUSE_ENV: &str = "MLP_RUNNER_PAUSE_AFTER_EPOCH_MS";

/// Check each run's config against the data it names (input width, limits, batch size), loading the data.
/// Errors name the spec file, the line and key, and the run.
pub fn check_data(exp: &Experiment, cache: &mut DataCache) -> Result<()> {
    let in_run = |name: &str| {
        if exp.runs.len() > 1 {
            format!(" (in run `{}`)", crate::text::clean(name))
        } else {
            String::new()
        }
    };
    for run in &exp.runs {
        let c = &run.config;
        let spec_error = |key: &'static str, msg: String| {
            Error::Spec(SpecError {
                file: exp.path.clone(),
                line: super::spec::locate_key(&exp.text, key),
                key: Some(key.to_string()),
                msg,
            })
        };
        // A data folder that cannot be read is the spec's `data.dir` (or, for a folder that is there but
        // not in the layout asked for, its `data.format`).
        let ds = cache.get(&c.data.dir, c.data.format).map_err(|e| match e {
            Error::Data { path, msg } => {
                let key = if Path::new(&c.data.dir).is_dir()
                    && c.data.format != crate::core::data::DataFormat::Auto
                {
                    "data.format"
                } else {
                    "data.dir"
                };
                let relative = if Path::new(&c.data.dir).is_relative() {
                    std::env::current_dir()
                        .map(|d| format!(" (relative to the working directory {})", d.display()))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                // Which run only matters when the sweep sets the data folder or its format.
                let swept = run
                    .overrides
                    .iter()
                    .any(|(k, _)| k == "data.dir" || k == "data.format");
                let which = if swept {
                    in_run(&run.name)
                } else {
                    String::new()
                };
                spec_error(key, format!("{}{relative}: {msg}{which}", path.display()))
            }
            e => e,
        })?;
        c.validate_against_data(ds.train.pixels(), ds.train.len(), ds.test.len())
            .map_err(|e| spec_error(e.key, format!("{}{}", e.msg, in_run(&run.name))))?;
        // A limit takes the first samples in the data's order: refused when those are not a sample of
        // the split (the PNG layout, grouped by label, gives one or two digits), rather than training on
        // it silently.
        let n = c.data.limit_train.unwrap_or(ds.train.len());
        let held = c.data.validation.unwrap_or(0);
        let train_labels = &ds.train.labels[..n.min(ds.train.labels.len())];
        let checks = [
            (
                "data.limit_train",
                &ds.train.labels[..],
                &train_labels[..train_labels.len().saturating_sub(held)],
                c.data.limit_train.is_some() || held > 0,
            ),
            (
                "data.validation",
                &ds.train.labels[..],
                &train_labels[train_labels.len().saturating_sub(held)..],
                held > 0,
            ),
            (
                "data.limit_test",
                &ds.test.labels[..],
                &ds.test.labels[..c
                    .data
                    .limit_test
                    .unwrap_or(ds.test.len())
                    .min(ds.test.len())],
                c.data.limit_test.is_some(),
            ),
        ];
        for (key, split, subset, limited) in checks {
            if let Some(why) = limited
                .then(|| crate::core::data::unbalanced(split, subset))
                .flatten()
            {
                return Err(spec_error(
                    key,
                    format!(
                        "the samples this takes (the first ones, in the data's order) are not a sample of \
                         the data: {why}. The PNG layout lists samples digit by digit; train on the whole \
                         split, or keep the data as IDX files in a shuffled order (as MNIST's are){}",
                        in_run(&run.name)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where each run of `exp` stands in `store` (without a store, every run is new), judged as this
/// process's claims would judge it. Read-only.
pub fn plan(exp: &Experiment, store: Option<&Store>, opts: &Options) -> Result<Vec<Queued>> {
    let me = Owner::this_process(opts.task.clone());
    let claimant = opts.claimant(&me);
    exp.runs
        .iter()
        .map(|run| {
            let hash = run.config.hash();
            let standing = match store {
                None => None,
                Some(store) => store.standing(&hash, &claimant)?,
            };
            // As the queue judges it: a run another search pruned is trained in full by this spec unless
            // this spec's own search has it.
            let searched = exp
                .search
                .as_ref()
                .is_some_and(|p| p.brackets.iter().any(|b| b.members.contains(&hash)));
            Ok(match standing {
                Some(Queued::Done {
                    status: RunStatus::Pruned,
                    ..
                }) if !searched => Queued::New { id: 0 },
                Some(q) => q,
                None => Queued::New { id: 0 },
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
    /// A `running` run whose owner has not been heard of for this long is taken over (at least
    /// three of this process's heartbeat intervals).
    pub stale_after: Duration,
    /// How often this process tells the store it is alive.
    pub heartbeat_every: Duration,
    /// Train only this shard's runs (and say where the shard came from).
    pub shard: Option<(Shard, String)>,
    /// The scheduler task this process runs as (see [`crate::store::owner`]).
    pub task: Option<String>,
    /// The store is this process's alone (a node-local copy for one shard): a `running` run there was
    /// left by a process that is gone, and is taken over at once.
    pub private_store: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            jobs: 1,
            stale_after: Duration::from_secs(600),
            heartbeat_every: Duration::from_secs(20),
            shard: None,
            task: None,
            private_store: false,
        }
    }
}

impl Options {
    /// Refuse a staleness limit that would take over owners that are only between two heartbeats.
    pub fn check(&self) -> Result<()> {
        let beat = self.heartbeat_every.as_secs_f64();
        if beat <= 0.0 {
            return Err(Error::Usage(
                "the heartbeat interval must be > 0 seconds".into(),
            ));
        }
        if self.stale_after.as_secs_f64() < MISSED_HEARTBEATS * beat {
            return Err(Error::Usage(format!(
                "--stale-after {} s is less than {MISSED_HEARTBEATS} heartbeats ({} s each): a live owner \
                 would be taken over between two signs of life; use --stale-after {} or more (or a shorter \
                 --heartbeat)",
                self.stale_after.as_secs_f64(),
                beat,
                (MISSED_HEARTBEATS * beat).ceil()
            )));
        }
        Ok(())
    }

    fn claimant<'a>(&self, me: &'a Owner) -> Claimant<'a> {
        Claimant {
            me,
            stale_after: self.stale_after,
            heartbeat_every: self.heartbeat_every,
            private: self.private_store,
        }
    }
}

/// One line of the end-of-sweep report: the latest row of each run of the spec.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: i64,
    pub name: String,
    pub status: RunStatus,
    pub test_acc: Option<f64>,
    pub test_loss: Option<f64>,
    pub seconds: Option<f64>,
    /// Trained (or resumed) by this invocation.
    pub trained_here: bool,
    /// Removed with `runner rm` (and so not trained again).
    pub deleted: bool,
    pub epochs_done: i64,
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
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Vec<RunReport>> {
    opts.check()?;
    let mut cache = DataCache::default();
    check_data(exp, &mut cache)?;
    let mut dataset_sha = HashMap::new();
    for run in &exp.runs {
        let d = &run.config.data;
        let sha = cache.sha256(&d.dir, d.format, d.limit_train, d.validation, d.limit_test)?;
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
    if opts.force && exp.search.is_some() {
        return Err(Error::Usage(
            "--force with an adaptive search: its decisions are stored with its runs, and training them \
             again would not make them again; train the spec into another --db (or `runner rm` its runs \
             and `runner gc` first)"
                .into(),
        ));
    }
    let store = Store::open(db)?;
    let me = Owner::this_process(opts.task.clone());
    let claimant = opts.claimant(&me);
    let new_runs: Vec<NewRun<'_>> = exp
        .runs
        .iter()
        .map(|r| NewRun {
            name: &r.name,
            overrides: &r.overrides,
            config: &r.config,
            keep_initial: exp.keep_initial,
        })
        .collect();
    let queued = store.enqueue(
        &NewExperiment {
            name: &exp.name,
            description: &exp.description,
            spec_path: &exp.path,
            spec_text: &exp.text,
            search: exp.search.as_ref(),
            metric: exp.metric,
        },
        &new_runs,
        opts.force,
        &claimant,
    )?;
    progress.log(&format!(
        "experiment {}: {} {} ({}) -> {}",
        crate::text::clean(&exp.name),
        exp.runs.len(),
        if exp.runs.len() == 1 { "run" } else { "runs" },
        queue_summary(&queued),
        db.display()
    ));
    if opts.private_store
        && let Some(Queued::Held { id, owner }) =
            queued.iter().find(|q| matches!(q, Queued::Held { .. }))
    {
        return Err(Error::Usage(format!(
            "--private-store, but run {id} is being trained by {owner}, a live process on this host: {} is \
             not this process's alone; drop --private-store (runs that live processes hold are then left to \
             them), or give this process a store of its own",
            db.display()
        )));
    }
    for q in &queued {
        if let Queued::Held { id, owner } = q {
            progress.log(&format!(
                "run {id}: being trained by {owner}; left to it (taken over if it gives no sign of life for {} s)",
                opts.stale_after.as_secs()
            ));
        }
    }
    let (to_train, steps_left) = work_left(&store, &cache, exp, &queued);
    progress.sweep_started(to_train, steps_left);

    let runs: HashMap<String, &PlannedRun> =
        exp.runs.iter().map(|r| (r.config.hash(), r)).collect();
    let hashes: Vec<String> = exp.runs.iter().map(|r| r.config.hash()).collect();
    let beat = Heartbeat::new(opts.heartbeat_every);
    let search = exp.search.as_ref().map(|p| p.hash());
    // Rungs decided before this invocation are not announced again.
    let decided = match &search {
        Some(h) => store
            .rungs(h)?
            .iter()
            .filter(|r| r.decided)
            .map(|r| (r.bracket, r.rung))
            .collect(),
        None => std::collections::BTreeSet::new(),
    };
    let ctx = Worker {
        announced: std::sync::Mutex::new(decided),
        search: search.as_deref(),
        runs: &runs,
        hashes: &hashes,
        cache: &cache,
        dataset_sha: &dataset_sha,
        claimant: &claimant,
        progress,
        stop,
        beat: &beat,
    };
    // More workers than runs to train would only idle.
    let jobs = opts.jobs.min(hashes.len()).max(1);
    let results: Vec<Result<Vec<i64>>> = std::thread::scope(|s| {
        s.spawn(|| beat.run(db, progress));
        // Worker 0 trains on this thread with the store opened above; the others open their own.
        let handles: Vec<_> = (1..jobs)
            .map(|_| s.spawn(|| ctx.work(&Store::open(db)?)))
            .collect();
        let mut results = vec![ctx.work(&store)];
        results.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::internal("a training worker thread panicked")))
        }));
        beat.stop();
        results
    });
    let mut trained = Vec::new();
    for r in results {
        trained.extend(r?);
    }

    reports(&store, exp, &hashes, &runs, &trained)
}

/// What `enqueue` found, as "2 new, 1 already done".
fn queue_summary(queued: &[Queued]) -> String {
    let count = |f: &dyn Fn(&Queued) -> bool| queued.iter().filter(|q| f(q)).count();
    [
        (count(&|q| matches!(q, Queued::New { .. })), "new"),
        (
            count(&|q| matches!(q, Queued::Unfinished { .. })),
            "to resume or retry",
        ),
        (
            count(&|q| matches!(q, Queued::Held { .. })),
            "running elsewhere",
        ),
        (count(&|q| matches!(q, Queued::Done { .. })), "already done"),
        (
            count(&|q| matches!(q, Queued::Paused { .. })),
            "paused at their rung",
        ),
        (
            count(&|q| matches!(q, Queued::Deleted { .. })),
            "deleted, not trained again: runner restore, or --force",
        ),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The runs this process may train (new and unfinished ones) and their steps: the epochs of new runs and
/// what unfinished ones have left, for the progress estimate.
fn work_left(store: &Store, cache: &DataCache, exp: &Experiment, queued: &[Queued]) -> (u64, u64) {
    let to_train: Vec<(&Queued, &PlannedRun)> = queued
        .iter()
        .zip(&exp.runs)
        .filter(|(q, _)| matches!(q, Queued::New { .. } | Queued::Unfinished { .. }))
        .collect();
    let steps_left = to_train
        .iter()
        .map(|(q, r)| {
            let done = match q {
                Queued::Unfinished { id, .. } => store.epochs_done(*id).unwrap_or(0),
                _ => 0,
            };
            let c = &r.config;
            let n = cache
                .loaded(&c.data.dir, c.data.format)
                .map_or(0, |d| train_samples(c, d.train.len()));
            // A search's run: the share of its schedule's epochs (a rough count: who is promoted is
            // not known yet).
            let epochs = match &exp.search {
                Some(plan) => {
                    let (planned, _) = plan.epochs();
                    planned.div_ceil(exp.runs.len().max(1))
                }
                None => c.train.epochs,
            };
            (epochs.saturating_sub(done) * steps_per_epoch(n, &c.train)) as u64
        })
        .sum();
    (to_train.len() as u64, steps_left)
}

/// One report per run of the experiment, as the store has it now (`trained`: the runs this process
/// trained).
fn reports(
    store: &Store,
    exp: &Experiment,
    hashes: &[String],
    runs: &HashMap<String, &PlannedRun>,
    trained: &[i64],
) -> Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    for hash in hashes {
        if let Some(s) = store.latest_summary(&exp.name, hash)? {
            reports.push(RunReport {
                trained_here: trained.contains(&s.id),
                deleted: s.deleted,
                epochs_done: s.epochs_done,
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
    /// The search over the runs, if the spec has one: a worker with nothing to claim waits while runs of
    /// it train (their rungs' decisions may promote runs for it to train).
    search: Option<&'a str>,
    /// The search's rungs (bracket, rung) whose decision is printed already (by any worker).
    announced: std::sync::Mutex<std::collections::BTreeSet<(i64, i64)>>,
    runs: &'a HashMap<String, &'a PlannedRun>,
    hashes: &'a [String],
    cache: &'a DataCache,
    dataset_sha: &'a HashMap<String, String>,
    claimant: &'a Claimant<'a>,
    progress: &'a dyn Progress,
    stop: &'a AtomicBool,
    beat: &'a Heartbeat,
}

impl Worker<'_> {
    /// Claim and train runs until none is left (or `stop`); returns the ids trained.
    fn work(&self, store: &Store) -> Result<Vec<i64>> {
        // The envelope depends on the run (its kernel); a hash not of this spec is reported below.
        let env = |hash: &str, trained_with: &TrainedWith| match self.runs.get(hash) {
            Some(run) => trained_with.envelope(run.config.model.dtype),
            None => Envelope::with_numerics(
                Kernel::Gemm,
                crate::core::math::Math::for_run(),
                crate::core::config::Dtype::F64,
            ),
        };
        let mut done = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(claim) = store.claim(self.hashes, &env, self.claimant)? else {
                // A search may promote runs once the runs training now reach their rung.
                match self.search {
                    Some(search) if store.search_progress(search)?.running > 0 => {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    _ => break,
                }
            };
            let run = self.runs.get(&claim.config_hash).ok_or_else(|| {
                Error::internal(format!("claimed run {} is not of this spec", claim.id))
            })?;
            done.push(claim.id);
            let lost = self.beat.own(claim.id, claim.token);
            let result = self.train_one(store, run, &claim, &lost);
            self.beat.release(claim.id);
            self.progress.run_done();
            result?;
            self.announce_rungs(store)?;
        }
        Ok(done)
    }

    /// One line for each rung of the search decided since the last look (whichever process decided
    /// it), under 100 columns: `rung 1 of bracket 0 (epoch 1, by val_acc): 9 of 27 kept, best run 13
    /// 0.9612; 18 pruned`.
    fn announce_rungs(&self, store: &Store) -> Result<()> {
        let Some(search) = self.search else {
            return Ok(());
        };
        let rungs = store.rungs(search)?;
        let mut seen = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        for r in rungs.iter().filter(|r| r.decided) {
            if !seen.insert((r.bracket, r.rung)) {
                continue;
            }
            let kept = r
                .members
                .iter()
                .filter(|m| m.promoted == Some(true))
                .count();
            let best = r
                .members
                .iter()
                .filter(|m| m.place == Some(1))
                .find_map(|m| Some((m.run_id?, m.value?)));
            let best = best.map_or(String::new(), |(id, v)| format!(", best run {id} {v:.4}"));
            let last = r.members.iter().all(|m| m.promoted != Some(true));
            let what = if last {
                format!("{} ranked (the last rung){best}", r.members.len())
            } else {
                format!(
                    "{kept} of {} kept{best}; {} pruned",
                    r.members.len(),
                    r.members.len() - kept
                )
            };
            self.progress.log(&format!(
                "rung {} of bracket {} (epoch {}, by {}): {what}",
                r.rung, r.bracket, r.epochs, r.metric
            ));
        }
        Ok(())
    }

    fn train_one(
        &self,
        store: &Store,
        run: &PlannedRun,
        claim: &Claim,
        lost: &AtomicBool,
    ) -> Result<()> {
        let c = &run.config;
        let run_id = claim.id;
        let name = crate::text::clean(&run.name);
        let data = self
            .cache
            .loaded(&c.data.dir, c.data.format)
            .ok_or_else(|| {
                Error::internal(format!(
                    "data {} was not loaded before training",
                    c.data.dir
                ))
            })?;
        // A checkpoint that does not match its hash is not resumed from, nor thrown away: the run is left
        // interrupted as it was, and the sweep stops with the corrupt store named (exit 3), for the user to
        // restore the store or to train the run again on purpose.
        let checkpoint = match store
            .checkpoint(claim)
            .and_then(|cp| fits(store, claim, c, cp))
        {
            Ok(cp) => cp,
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                self.progress.log(&format!(
                    "run {run_id} {name}: its checkpoint is corrupt; left interrupted, not trained: restore \
                     the store from a copy, or `runner rm {run_id}` and train the spec again with --force \
                     (from the start)"
                ));
                self.end(store, claim, RunStatus::Interrupted, None)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // A run of a search trains to its rung's epochs (the store pauses it there).
        let target = claim
            .target_epochs
            .unwrap_or(c.train.epochs)
            .min(c.train.epochs);
        let to = if target < c.train.epochs {
            format!(" to epoch {target} of {} (its rung)", c.train.epochs)
        } else {
            String::new()
        };
        let what = match &checkpoint {
            Some(cp) => format!("resuming after epoch {}/{}{to}", cp.epoch, c.train.epochs),
            None => format!("training{to}"),
        };
        self.progress.log(&start_line(run_id, &name, &what));
        let batches = steps_per_epoch(train_samples(c, data.train.len()), &c.train);
        let dataset_sha256 = self
            .dataset_sha
            .get(&claim.config_hash)
            .cloned()
            .ok_or_else(|| Error::internal(format!("run {run_id}: its dataset was not hashed")))?;
        let mut obs = StoreObserver {
            store,
            run_id,
            token: claim.token,
            epochs: c.train.epochs,
            dataset_sha256,
            data_path: absolute(&c.data.dir),
            progress: self.progress,
            bar: self.progress.run_started(&RunStart {
                run_id,
                name: &name,
                epochs: target,
                done: checkpoint.as_ref().map_or(0, |cp| cp.epoch),
                batches,
                batch_size: c.train.batch_size,
            }),
            stop: self.stop,
            lost,
            pause: std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok()),
            after: AfterEpoch::Continue,
        };
        let mut training = Training::new(c, data)
            .kernel(claim.trained_with.kernel(c.model.dtype))
            .math(claim.trained_with.math());
        if let Some(cp) = checkpoint.as_ref() {
            training = training.resume_from(cp);
        }
        let outcome = training.run(&mut obs);
        obs.bar.finish();
        match outcome {
            Ok(Outcome::Completed(_)) => Ok(()),
            Ok(Outcome::Diverged { epoch, .. }) => {
                self.progress.log(&format!(
                    "run {run_id}: diverged at epoch {epoch} (the loss is not finite); the sweep goes on"
                ));
                Ok(())
            }
            Ok(Outcome::Stopped { epoch }) if obs.after != AfterEpoch::Continue => {
                self.progress.log(&if obs.after == AfterEpoch::Pruned {
                    format!("run {run_id}: pruned at epoch {epoch} (its rung promoted others)")
                } else {
                    format!(
                        "run {run_id}: paused at epoch {epoch} until every run of its rung has it"
                    )
                });
                Ok(())
            }
            Ok(Outcome::Stopped { epoch }) => {
                let status = RunStatus::Interrupted;
                let r = self.end(store, claim, status, None);
                if !lost.load(Ordering::SeqCst) {
                    self.progress.log(&format!(
                        "run {run_id}: interrupted with {epoch} epochs stored; `runner resume {run_id}` (or the spec again) resumes it"
                    ));
                }
                r
            }
            Err(Error::Lost { run, msg }) => {
                self.progress.log(&format!("run {run}: {msg}"));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.progress.log(&format!("run {run_id}: failed: {msg}"));
                self.end(store, claim, RunStatus::Failed, Some(&msg))?;
                // A bug or a corrupt store is not one run's problem: stop the sweep and say so.
                match e.kind() {
                    ErrorKind::Input => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    /// End a run this worker owns; a run lost to another process meanwhile is only reported.
    fn end(
        &self,
        store: &Store,
        claim: &Claim,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<()> {
        match store.end_run(claim.id, claim.token, status, error) {
            Err(Error::Lost { run, msg }) => {
                self.progress.log(&format!("run {run}: {msg}"));
                Ok(())
            }
            other => other,
        }
    }
}

/// A data folder as an absolute path (symbolic links resolved), as stored with each run so that `verify`
/// finds the data from any working directory; the path as given if it cannot be resolved.
fn absolute(dir: &str) -> String {
    std::fs::canonicalize(dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.to_string())
}

/// The samples a run trains on, of a training split of `len`: its limit, less what it holds out.
pub(crate) fn train_samples(c: &RunConfig, len: usize) -> usize {
    c.data
        .limit_train
        .unwrap_or(len)
        .saturating_sub(c.data.validation.unwrap_or(0))
}

/// SGD steps in an epoch of `n` training samples.
fn steps_per_epoch(n: usize, t: &crate::core::config::TrainSpec) -> usize {
    crate::core::loader::batches(n, t.batch_size, t.drop_last)
}

/// A checkpoint whose tensors are not the run's layers is corrupt (its hash matched: the rows were
/// written wrong, or edited consistently).
fn fits(
    store: &Store,
    claim: &Claim,
    c: &RunConfig,
    cp: Option<Checkpoint>,
) -> Result<Option<Checkpoint>> {
    let Some(cp) = cp else { return Ok(None) };
    let sizes = cp.params.sizes();
    if sizes != c.model.sizes || cp.params.dtype != c.model.dtype {
        return Err(Error::Corrupt {
            path: store.path().to_path_buf(),
            msg: format!(
                "run {}, its checkpoint of epoch {} is {} {sizes:?} but its config says {} {:?}",
                claim.id,
                cp.epoch,
                cp.params.dtype.as_str(),
                c.model.dtype.as_str(),
                c.model.sizes
            ),
        });
    }
    Ok(Some(cp))
}

/// Stores a run's progress: initial weights at the start, each epoch with its checkpoint in one
/// transaction, and with the last epoch the final weights and status; every write fenced by the claim.
struct StoreObserver<'a> {
    store: &'a Store,
    run_id: i64,
    token: i64,
    epochs: usize,
    dataset_sha256: String,
    /// The data folder as an absolute path.
    data_path: String,
    progress: &'a dyn Progress,
    bar: Box<dyn RunProgress>,
    stop: &'a AtomicBool,
    /// Set by the heartbeat thread when another process has taken the run over.
    lost: &'a AtomicBool,
    pause: Option<u64>,
    /// What the last stored epoch did to the run in its search (paused at its rung, pruned).
    after: AfterEpoch,
}

impl Observer for StoreObserver<'_> {
    fn on_start(&mut self, initial: &Snapshot) -> Result<()> {
        self.store.start_run(
            self.run_id,
            self.token,
            &self.dataset_sha256,
            &self.data_path,
            initial,
        )
    }

    fn on_batch(&mut self, epoch: usize, done: usize, _total: usize, loss_sum: f64) -> Control {
        self.bar.batch(epoch, done, loss_sum);
        if self.stop.load(Ordering::Relaxed) || self.lost.load(Ordering::Relaxed) {
            return Control::Stop;
        }
        Control::Continue
    }

    fn on_epoch(&mut self, m: &EpochMetrics, checkpoint: &Checkpoint) -> Result<Control> {
        let finish = if m.diverged() {
            Some(RunStatus::Diverged)
        } else if m.epoch == self.epochs || checkpoint.stopped.is_some() {
            Some(RunStatus::Completed)
        } else {
            None
        };
        self.after = self
            .store
            .record_epoch(self.run_id, self.token, m, checkpoint, finish)?;
        self.progress.log(&format!(
            "run {} {}",
            self.run_id,
            epoch_line(m, self.epochs)
        ));
        if let Some(reason) = &checkpoint.stopped {
            self.progress.log(&format!(
                "run {}: completed at epoch {}: {reason}",
                self.run_id, m.epoch
            ));
        }
        if let Some(ms) = self.pause {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(
            if self.stop.load(Ordering::SeqCst)
                || self.lost.load(Ordering::SeqCst)
                || self.after != AfterEpoch::Continue
            {
                Control::Stop
            } else {
                Control::Continue
            },
        )
    }
}

/// `run 5 lr_sweep/learning_rate=0.1,seed=1: training`, kept under 100 columns: a long name loses its
/// experiment's prefix (the sweep's first line names the experiment), then its end (`...`).
fn start_line(run_id: i64, name: &str, what: &str) -> String {
    const WIDTH: usize = 99;
    let line = |n: &str| format!("run {run_id} {n}: {what}");
    let full = line(name);
    if full.chars().count() <= WIDTH {
        return full;
    }
    let short = name.split_once('/').map_or(name, |(_, rest)| rest);
    let fixed = line("").chars().count();
    let room = WIDTH.saturating_sub(fixed).max(12);
    if short.chars().count() <= room {
        return line(short);
    }
    let cut: String = short.chars().take(room - 3).collect();
    line(&format!("{cut}..."))
}

/// `epoch 2/3  loss, acc: train 0.1234 96.52%  test 0.1301 96.10%  1.52 s`, with `val 0.1290 96.20%`
/// before the test figures when the run holds a validation split out (what a search ranks and the best
/// is chosen by): under 100 columns with the run's id in front.
fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let val = match (m.val_loss, m.val_acc) {
        (Some(l), Some(a)) => format!("  val {l:.4} {:.2}%", 100.0 * a),
        _ => String::new(),
    };
    format!(
        "epoch {}/{epochs}  loss, acc: train {:.4} {:.2}%{val}  test {:.4} {:.2}%  {:.2} s{}",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's start line keeps its whole name when it fits 99 columns, else drops the experiment's
    /// prefix, else cuts the name's end; the run id and what happens are always whole.
    #[test]
    fn start_lines_fit_99_columns() {
        assert_eq!(
            start_line(5, "lr_sweep/learning_rate=0.1,seed=1", "training"),
            "run 5 lr_sweep/learning_rate=0.1,seed=1: training"
        );
        let name = "halving/sizes=784-64-10,batch_size=100,learning_rate=0.03";
        let what = "training to epoch 1 of 9 (its rung)";
        let l = start_line(9, name, what);
        assert_eq!(
            l,
            "run 9 sizes=784-64-10,batch_size=100,learning_rate=0.03: training to epoch 1 of 9 (its rung)"
        );
        let long = format!("e/{}", "x=1,".repeat(40));
        let l = start_line(123, &long, what);
        assert!(l.chars().count() <= 99, "{l}");
        assert!(
            l.starts_with("run 123 x=1,")
                && l.ends_with("...: training to epoch 1 of 9 (its rung)")
        );
    }

    /// Epoch lines carry the validation figures when the run holds a split out.
    #[test]
    fn epoch_lines_show_validation_when_held_out() {
        let mut m = EpochMetrics {
            epoch: 2,
            train_loss: 0.1234,
            train_acc: 0.9652,
            test_loss: 0.1301,
            test_acc: 0.961,
            val_loss: None,
            val_acc: None,
            seconds: 1.52,
            train_seconds: 1.2,
            learning_rate: Some(0.1),
            test_classes: None,
            val_classes: None,
        };
        assert_eq!(
            epoch_line(&m, 3),
            "epoch 2/3  loss, acc: train 0.1234 96.52%  test 0.1301 96.10%  1.52 s"
        );
        m.val_loss = Some(0.129);
        m.val_acc = Some(0.962);
        let l = epoch_line(&m, 10);
        assert_eq!(
            l,
            "epoch 2/10  loss, acc: train 0.1234 96.52%  val 0.1290 96.20%  test 0.1301 96.10%  1.52 s"
        );
        assert!(format!("run 1234 {l}").len() < 100);
    }
}
