//! `runner <spec>` (`run`), `resume` and `plan`: training a spec's runs, with progress on a terminal, a
//! summary table at the end, and Ctrl-C handled; and the plan of what a spec would train.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use mlp_runner::Error;
use mlp_runner::report::rungs;
use mlp_runner::report::table::Format;
use mlp_runner::store::manage::Deleted;
use mlp_runner::store::search::{RungState, SearchProgress};
use mlp_runner::store::{Queued, RunStatus, Store, Table};
use mlp_runner::sweep::{self, Experiment, PlannedRun, Shard, spec};
use rusqlite::types::Value;

use super::args::{CommandFacts, DbArg, Exit, FormatArgs, ThreadsArg, print_table};
use super::progress::Bars;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment spec to train (TOML), e.g. experiments/lr_sweep.toml.
    #[arg(value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// Train runs again even when the store already has them completed.
    #[arg(long)]
    pub force: bool,
    /// Train this many runs at once, one thread each; 0 (the default) means one per CPU core. The bits
    /// do not depend on it: every run is the same with --jobs 1.
    #[arg(allow_negative_numbers = true, long, short = 'j', default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub jobs: u16,
    #[command(flatten)]
    pub liveness: Liveness,
    /// Train only shard I of N (0 <= I < N), chosen by each run's config hash. Without it, a Slurm array
    /// task (SLURM_ARRAY_TASK_ID, with MLP_RUNNER_SHARD_FIRST and MLP_RUNNER_SHARD_STEP for an array that
    /// does not count 0, 1, 2 ...) or a Kubernetes index (JOB_COMPLETION_INDEX) gives the shard, with the
    /// shard count stated in MLP_RUNNER_SHARD_COUNT.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// This store is used by this process alone (e.g. one shard's node-local copy on a cluster): a run it
    /// holds as `running` was left by a process that is gone, and is taken over at once.
    #[arg(long)]
    pub private_store: bool,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

impl RunArgs {
    /// The first option of training given (for a command line that names another command too).
    pub fn training_flag(&self) -> Option<&'static str> {
        let d = Liveness::default();
        [
            (self.force, "--force"),
            (self.jobs != 0, "--jobs"),
            (self.shard.is_some(), "--shard"),
            (self.private_store, "--private-store"),
            (self.liveness.stale_after != d.stale_after, "--stale-after"),
            (self.liveness.heartbeat != d.heartbeat, "--heartbeat"),
        ]
        .into_iter()
        .find(|(given, _)| *given)
        .map(|(_, flag)| flag)
    }
}

/// Names the scheduler task this process runs as (e.g. `slurm:4242:1/4`): a retried attempt of the same
/// task takes over the runs its earlier attempt left `running` at once.
const TASK_ENV: &str = "MLP_RUNNER_TASK";

/// How this process shows it is alive, and when it takes over a run whose owner does not.
#[derive(Debug, Args, Clone, Copy)]
pub struct Liveness {
    /// Take over a `running` run whose owner has given no sign of life for this many seconds (at least
    /// three heartbeats).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub stale_after: u64,
    /// Tell the store every this many seconds that this process is alive (1 to 3600).
    #[arg(allow_negative_numbers = true, long, default_value_t = 20, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat: u64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            stale_after: 600,
            heartbeat: 20,
        }
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The experiment spec (TOML), e.g. experiments/lr_sweep.toml.
    pub spec: PathBuf,
    /// Print only the number of rounds a cluster runs the spec in: the rungs of its longest bracket for
    /// a search (each round a job array, then a merge that decides the rung), 1 otherwise.
    #[arg(long)]
    pub rounds: bool,
    /// Print only the shard (I/N) this process is assigned by its scheduler's environment (a Slurm array
    /// task, a Kubernetes index, with MLP_RUNNER_SHARD_COUNT), checked as a training run checks it: a task
    /// that maps to no shard, or to one another task has too, is an error (exit 2).
    #[arg(long, conflicts_with = "rounds")]
    pub assigned_shard: bool,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to resume: its id, its name, or a prefix of exactly one run's name.
    #[arg(allow_negative_numbers = true)]
    pub run: String,
    #[command(flatten)]
    pub liveness: Liveness,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

/// `runner <spec>`.
pub fn run(spec_path: &Path, db: &Path, args: &RunArgs, out: &mut dyn Write) -> Result<Exit> {
    train(&load_spec(spec_path)?, db, args, out)
}

/// A spec path, or a word that is probably a misspelt command. A file that is not TOML by its name
/// (`runner README.md`) is refused before it is parsed.
fn load_spec(path: &Path) -> Result<Experiment> {
    let word = path.to_string_lossy();
    if !path.exists()
        && path.extension().is_none()
        && let Some(cmd) = super::suggest(&word)
    {
        return Err(Error::Usage(format!(
            "`{}` is neither a spec file nor a command; did you mean `runner {cmd}`?",
            mlp_runner::text::clean(&word)
        ))
        .into());
    }
    if let Some(ext) = path.extension().filter(|e| *e != "toml")
        && path.is_file()
    {
        return Err(Error::Usage(format!(
            "{} is not a spec: a spec is a TOML file named *.toml (this one ends in .{}); see \
             experiments/*.toml, or `runner --help` for the commands",
            mlp_runner::text::clean(&word),
            mlp_runner::text::clean(&ext.to_string_lossy())
        ))
        .into());
    }
    Ok(spec::load(path).map_err(Error::from)?)
}

fn options(args: &RunArgs) -> Result<sweep::Options> {
    let (shard, task) = match args.shard {
        Some(s) => (Some((s, "--shard".to_string())), None),
        None => match Shard::from_env(|k| std::env::var(k).ok())? {
            Some(a) => (Some((a.shard, a.from)), a.task),
            None => (None, None),
        },
    };
    // A scheduler script may name its task itself (examples/run-shard.sh's callers do).
    let task = std::env::var(TASK_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or(task);
    Ok(sweep::Options {
        force: args.force,
        jobs: match args.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        },
        stale_after: Duration::from_secs(args.liveness.stale_after),
        heartbeat_every: Duration::from_secs(args.liveness.heartbeat),
        shard,
        task,
        private_store: args.private_store,
    })
}

fn train(exp: &Experiment, db: &Path, args: &RunArgs, out: &mut dyn Write) -> Result<Exit> {
    let opts = options(args)?;
    let stop = interrupt_flag();
    let bars = Bars::new(std::io::stdout().is_terminal() && std::io::stderr().is_terminal());
    let reports = sweep::run(exp, db, &opts, &bars, &stop);
    bars.finish();
    let reports = reports?;
    // The parameters the sweep varies, as columns (the run name when nothing varies): every key any run
    // sets, in the order they first appear (a variant sets keys that others leave at the base value).
    let mut keys: Vec<String> = Vec::new();
    for r in &reports {
        for (k, _) in &r.overrides {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut columns = vec!["run_id".to_string()];
    if keys.is_empty() {
        columns.push("name".into());
    }
    columns.extend(
        keys.iter()
            .map(|k| k.rsplit('.').next().unwrap_or(k).to_string()),
    );
    columns.push("status".into());
    // A search's runs end at different epochs.
    if exp.search.is_some() {
        columns.push("epochs".into());
    }
    columns.extend(["test_acc", "test_loss", "seconds"].map(String::from));
    let mut t = Table {
        columns,
        rows: Vec::new(),
    };
    let real = |v: Option<f64>| v.map(Value::Real).unwrap_or(Value::Null);
    for r in &reports {
        let status = if r.deleted {
            format!("{} (deleted)", r.status)
        } else if r.trained_here || r.status != RunStatus::Completed {
            r.status.to_string()
        } else {
            format!("{} (earlier)", r.status)
        };
        let mut row = vec![Value::Integer(r.run_id)];
        if keys.is_empty() {
            row.push(Value::Text(r.name.clone()));
        }
        row.extend(keys.iter().map(|k| {
            match r.overrides.iter().find(|(key, _)| key == k).map(|(_, v)| v) {
                None => Value::Null,
                Some(toml::Value::Integer(i)) => Value::Integer(*i),
                Some(toml::Value::Float(f)) => Value::Real(*f),
                Some(toml::Value::String(s)) => Value::Text(s.clone()),
                Some(other) => Value::Text(other.to_string()),
            }
        }));
        row.push(Value::Text(status));
        if exp.search.is_some() {
            row.push(Value::Integer(r.epochs_done));
        }
        row.extend([
            real(r.test_acc),
            real(r.test_loss),
            real(r.seconds.map(|s| (s * 100.0).round() / 100.0)),
        ]);
        t.rows.push(row);
    }
    writeln!(out)?;
    print_table(&t, Format::Text, out)?;
    if let Some(plan) = &exp.search {
        let store = Store::open_read_only(db)?;
        let rungs = store.rungs(&plan.hash())?;
        writeln!(out, "\n{}:", rungs::describe(plan))?;
        print_table(&rungs::rung_table(&rungs, Some(plan)), Format::Text, out)?;
        let progress = store.search_progress(&plan.hash())?;
        if progress.undecided == 0 {
            if let Some(best) = best_of(&store, &rungs)? {
                writeln!(out, "{best}")?;
            }
        } else {
            writeln!(out, "{}", waiting(&progress))?;
        }
    } else if let Ok(store) = Store::open_read_only(db)
        && let Some(best) = mlp_runner::report::compare::best_line(&store, &exp.name)?
    {
        writeln!(out, "\n{best}")?;
        if !exp.metric.needs_validation() {
            writeln!(
                out,
                "  chosen on the test set (no validation split): this test figure is optimistic"
            )?;
        }
    }
    // What to look at next, with --db only where it is not the default.
    let db_arg = if db == std::path::Path::new(super::args::DEFAULT_DB) {
        String::new()
    } else {
        format!(" --db {}", db.display())
    };
    writeln!(
        out,
        "\nresults in {}; next: runner compare {}{db_arg}, or runner ui{db_arg}",
        db.display(),
        mlp_runner::text::clean(&exp.name),
    )?;
    if stop.load(Ordering::SeqCst) {
        writeln!(out, "interrupted: run the same command again to resume")?;
        return Ok(Exit::Interrupted);
    }
    let held = reports
        .iter()
        .filter(|r| r.status == RunStatus::Running)
        .count();
    if held > 0 {
        writeln!(
            out,
            "{held} runs are being trained by other processes; run the spec again later to see them finished"
        )?;
    }
    let unfinished = reports
        .iter()
        .filter(|r| matches!(r.status, RunStatus::Failed | RunStatus::Interrupted));
    Ok(if unfinished.count() > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

/// The search's winner: the best run of the last rung of the bracket whose last rung's best is best.
fn best_of(store: &Store, rungs: &[RungState]) -> Result<Option<String>> {
    let Some(last) = rungs
        .iter()
        .filter(|r| {
            !rungs
                .iter()
                .any(|n| n.bracket == r.bracket && n.rung > r.rung)
        })
        .filter_map(|r| {
            r.members
                .iter()
                .find(|m| m.place == Some(1))
                .map(|m| (r, m))
        })
        .filter(|(_, m)| m.value.is_some())
        .max_by(|a, b| {
            let (x, y) = (a.1.value.unwrap_or(0.0), b.1.value.unwrap_or(0.0));
            if a.0.metric.ends_with("loss") {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        })
    else {
        return Ok(None);
    };
    let Some(id) = last.1.run_id else {
        return Ok(None);
    };
    let t = store.run_figures(id)?;
    let row = t.rows.first().cloned().unwrap_or_default();
    let cell = |i: usize| {
        row.get(i)
            .map(mlp_runner::report::table::cell)
            .unwrap_or_default()
    };
    let others: Vec<String> = [("val_acc", 1), ("test_acc", 2)]
        .iter()
        .filter(|(m, i)| *m != last.0.metric && !cell(*i).is_empty())
        .map(|(m, i)| format!("{m} {}", cell(*i)))
        .collect();
    Ok(Some(format!(
        "best: run {id} {} ({} epochs): {} {}{}",
        mlp_runner::text::clean(&cell(0)),
        cell(3),
        last.0.metric,
        last.1.value.map_or(String::new(), |v| format!("{v}")),
        if others.is_empty() {
            String::new()
        } else {
            format!(", {}", others.join(", "))
        }
    )))
}

/// Why a search stopped before its end.
fn waiting(p: &SearchProgress) -> String {
    let mut why = Vec::new();
    if p.missing > 0 {
        why.push(format!(
            "{} of its runs are not in this store (other shards': merge their stores, and the merge decides \
             what it can)",
            p.missing
        ));
    }
    if p.failed > 0 {
        why.push(format!(
            "{} failed runs hold their rungs (run the spec again to retry them)",
            p.failed
        ));
    }
    if p.running > 0 {
        why.push(format!(
            "{} runs are training in other processes",
            p.running
        ));
    }
    format!(
        "the search is not done: {} rungs undecided{}",
        p.undecided,
        if why.is_empty() {
            String::new()
        } else {
            format!("; {}", why.join("; "))
        }
    )
}

/// A flag set by the first SIGINT or SIGTERM; a second one exits at once (code 130).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit is checked before the flag is set by this signal.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

/// `runner resume <run>`: the run's stored config as a one-run experiment.
pub fn resume(db: &Path, args: ResumeArgs, out: &mut dyn Write) -> Result<Exit> {
    let ResumeArgs { run, liveness, .. } = args;
    let exp = {
        let store = Store::open_read_only(db)?;
        let run = store.resolve(&run, Deleted::Avoid)?;
        let row = store.run(run)?;
        if row.status.is_finished() {
            return Err(Error::Usage(format!(
                "run {run} ({}) is {} already; nothing to resume",
                mlp_runner::text::clean(&row.name),
                row.status
            ))
            .into());
        }
        let config = row.config(&store)?;
        let metric = store.selection_metric(&row.experiment)?;
        Experiment {
            name: row.experiment,
            description: String::new(),
            path: format!("(stored config of run {run})"),
            text: row.config_toml,
            runs: vec![PlannedRun {
                name: row.name,
                overrides: Vec::new(),
                config,
            }],
            keep_initial: false,
            search: None,
            metric,
        }
    };
    let args = RunArgs {
        spec: None,
        force: false,
        jobs: 1,
        liveness,
        // The one shard of one: a scheduler's shard variables must not filter this run out.
        shard: Some(Shard { index: 0, count: 1 }),
        private_store: false,
        db: DbArg::default(),
        threads: ThreadsArg::default(),
    };
    train(&exp, db, &args, out)
}

/// `runner plan <spec>`.
pub fn plan(args: &PlanArgs, db: &Path, out: &mut dyn Write) -> Result<Exit> {
    let exp = load_spec(&args.spec)?;
    if args.assigned_shard {
        let assigned = Shard::from_env(|k| std::env::var(k).ok())?.ok_or_else(|| {
            Error::Usage(
                "no scheduler shard in the environment: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, with \
                 MLP_RUNNER_SHARD_COUNT"
                    .into(),
            )
        })?;
        writeln!(out, "{}/{}", assigned.shard.index, assigned.shard.count)?;
        return Ok(Exit::Ok);
    }
    if args.rounds {
        let rounds = exp.search.as_ref().map_or(1, |p| {
            p.brackets.iter().map(|b| b.rungs.len()).max().unwrap_or(1)
        });
        writeln!(out, "{rounds}")?;
        return Ok(Exit::Ok);
    }
    sweep::check_data(&exp, &mut mlp_runner::core::data::DataCache::default())?;
    let store = if db.exists() {
        Some(Store::open_read_only(db)?)
    } else {
        None
    };
    let decisions = sweep::plan(&exp, store.as_ref(), &sweep::Options::default())?;
    let mut t = Table::new(&["#", "name", "config_hash", "sets", "state"]);
    for (i, (run, d)) in exp.runs.iter().zip(&decisions).enumerate() {
        let sets: Vec<String> = run
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let state = match d {
            Queued::New { .. } => "to train".to_string(),
            Queued::Unfinished { id, status } => {
                format!("to train: run {id} ({status}) is resumed or retried")
            }
            Queued::Held { id, owner } => format!("running: run {id}, by {owner}"),
            Queued::Done { id, status } => format!("done: run {id} ({status})"),
            Queued::Deleted { id } => {
                format!("deleted: run {id} (runner restore {id}, or --force to train it again)")
            }
            Queued::Paused { id, epochs } => {
                format!("paused: run {id} at epoch {epochs}, until its rung is decided")
            }
        };
        t.rows.push(vec![
            Value::Integer(i as i64 + 1),
            Value::Text(run.name.clone()),
            Value::Text(run.config.hash()[..12].to_string()),
            Value::Text(sets.join(" ")),
            Value::Text(state),
        ]);
    }
    let format = args.format.format();
    if format == Format::Text {
        writeln!(
            out,
            "experiment {} ({}): {} runs",
            mlp_runner::text::clean(&exp.name),
            mlp_runner::text::clean(&exp.path),
            exp.runs.len()
        )?;
        if let Some(plan) = &exp.search {
            writeln!(out, "{}", rungs::describe(plan))?;
            print_table(
                &rungs::schedule_table(plan, store.as_ref())?,
                Format::Text,
                out,
            )?;
            writeln!(out)?;
        }
    }
    print_table(&t, format, out)?;
    Ok(Exit::Ok)
}

impl CommandFacts for RunArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn threads(&self) -> Option<ThreadsArg> {
        Some(self.threads)
    }
    fn trains(&self) -> bool {
        true
    }
}

impl CommandFacts for PlanArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for ResumeArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn threads(&self) -> Option<ThreadsArg> {
        Some(self.threads)
    }
    fn trains(&self) -> bool {
        true
    }
}
