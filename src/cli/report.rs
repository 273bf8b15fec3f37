//! `compare`, `plot`, `export` and `predict`: reports over the store, and files written from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mlp_runner::Error;
use mlp_runner::files::{Guard, write_atomically};
use mlp_runner::report::table::Format;
use mlp_runner::report::{compare as cmp, export as exp, plot as plt, predict as pred};
use mlp_runner::store::manage::Deleted;
use mlp_runner::store::{RunStatus, Store, Table, WeightsKind};
use mlp_runner::text::clean;
use rusqlite::types::Value;

use super::args::{CommandFacts, DbArg, Exit, FormatArgs, print_table};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The experiment to compare (default: the newest with finished runs).
    pub experiment: Option<String>,
    /// Compare every configuration with this one: a run id, or `key=value,...` over the parameters that
    /// vary (e.g. learning_rate=0.1); paired over shared seeds (paired t-test), Welch's test otherwise.
    #[arg(long, value_name = "RUN|KEY=VALUE,...")]
    pub baseline: Option<String>,
    /// Also show each configuration's mean test accuracy per class (from the runs' confusion matrices)
    /// and its worst class, ranked by the worst class's accuracy.
    #[arg(long, conflicts_with = "baseline")]
    pub classes: bool,
    /// With --classes: rank the configurations by this class's accuracy instead (best first).
    #[arg(long, value_name = "K", requires = "classes")]
    pub class: Option<usize>,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run: its id, its name, or a prefix of exactly one run's name.
    #[arg(allow_negative_numbers = true)]
    pub run: String,
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Which weights: final (default), initial, or checkpoint (the latest epoch of an unfinished run).
    #[arg(long, default_value = "final", value_parser = ["final", "initial", "checkpoint"])]
    pub weights: String,
    /// Replace the output even if it is an SQLite database (never the store this reads).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The run whose final weights classify: its id, its name, or a unique name prefix.
    #[arg(allow_negative_numbers = true)]
    pub run: String,
    /// PNG images of digits (any size, dark on light or light on dark, with or without transparency).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image, most probable first.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Runs to plot: ids, names or unique name prefixes (default: the finished runs of --experiment,
    /// or of the newest experiment).
    #[arg(allow_negative_numbers = true)]
    pub runs: Vec<String>,
    /// The experiment whose finished runs to plot (default: the newest).
    #[arg(long, value_name = "NAME", conflicts_with = "runs")]
    pub experiment: Option<String>,
    /// Final test accuracy against learning rate instead of learning curves.
    #[arg(long)]
    pub lr: bool,
    /// The image to write: .png or .svg.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace the output even if it is an SQLite database (never the store this reads).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
}

pub fn compare(db: &Path, args: CompareArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let name = cmp::experiment_name(&store, args.experiment.as_deref())?;
    let format = args.format.format();
    if args.classes {
        let Some(t) = cmp::class_table(&store, &name, args.class)? else {
            return Err(mlp_runner::Error::Usage(format!(
                "no completed run of experiment {} stored its confusion matrix (runs completed before \
                 schema 8 have none); runner compare {} without --classes compares overall accuracy",
                clean(&name),
                clean(&name)
            ))
            .into());
        };
        if format == Format::Text {
            writeln!(
                out,
                "experiment {}: mean test accuracy per class over each configuration's completed seeds, {}:",
                clean(&name),
                match args.class {
                    Some(k) => format!("ranked by class {k}"),
                    None => "ranked by the worst class".to_string(),
                }
            )?;
        }
        print_table(&t, format, out)?;
        return Ok(Exit::Ok);
    }
    let table = match &args.baseline {
        Some(b) => cmp::compare_baseline(&store, &name, b)?,
        None => cmp::compare(&store, &name)?,
    };
    if format == Format::Text {
        match &args.baseline {
            Some(b) => writeln!(
                out,
                "experiment {}, against the baseline {} (test accuracy, in points):",
                clean(&name),
                clean(b)
            )?,
            None => writeln!(out, "experiment {}:", clean(&name))?,
        }
    }
    print_table(&table, format, out)?;
    if format == Format::Text && args.baseline.is_none() {
        writeln!(out, "{}", cmp::selection_note(&store, &name)?)?;
    }
    // What the experiment's searches decided, rung by rung.
    if format == Format::Text && args.baseline.is_none() {
        for search in store.searches_of(&name)? {
            let rungs = store.rungs(&search)?;
            writeln!(
                out,
                "\nsearch {} (the rungs view has every run):",
                &search[..12]
            )?;
            print_table(
                &mlp_runner::report::rungs::rung_table(&rungs, None),
                Format::Text,
                out,
            )?;
        }
    }
    Ok(Exit::Ok)
}

pub fn export(db: &Path, args: ExportArgs, out: &mut dyn Write) -> Result<Exit> {
    let ExportArgs {
        run,
        output,
        weights,
        force,
        ..
    } = args;
    let kind = WeightsKind::parse(&weights).ok_or_else(|| {
        Error::Usage(format!(
            "--weights {weights}: expected final, initial or checkpoint"
        ))
    })?;
    let store = Store::open_read_only(db)?;
    let run = store.resolve(&run, Deleted::Avoid)?;
    let m = exp::load(&store, run, kind)?;
    let bytes = exp::safetensors_bytes(&m)?;
    let guard = Guard {
        store: Some(db),
        inputs: &[],
        force,
    };
    write_atomically(&output, &guard, |tmp| {
        std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))
    })?;
    writeln!(
        out,
        "wrote run {run}'s {weights} weights ({} tensors, {}, sha256 {}) to {}",
        m.params.tensors.len(),
        m.params.dtype.as_str(),
        m.params.sha256(),
        output.display()
    )?;
    Ok(Exit::Ok)
}

pub fn predict(db: &Path, args: PredictArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let run = store.resolve(&args.run, Deleted::Avoid)?;
    let m = exp::load(&store, run, WeightsKind::Final)?;
    // The run, not an image, at fault (it diverged): one error for all of them.
    pred::usable(&m)?;
    let mut t = Table::new(&["image", "rank", "class", "probability", "note"]);
    let mut failed = 0;
    for path in &args.images {
        // An image that cannot be classified (blank, unreadable, not a PNG) gets its own row saying why;
        // the others their answers. A corrupt store still stops everything.
        match pred::predict_file(&m, path) {
            Ok(p) => {
                for (rank, (class, prob)) in
                    pred::top_k(&p, args.top as usize).into_iter().enumerate()
                {
                    t.rows.push(vec![
                        Value::Text(path.display().to_string()),
                        Value::Integer(rank as i64 + 1),
                        Value::Integer(class as i64),
                        Value::Real((prob * 1e4).round() / 1e4),
                        Value::Text(String::new()),
                    ]);
                }
            }
            Err(e) if e.kind() == mlp_runner::ErrorKind::Input => {
                failed += 1;
                t.rows.push(vec![
                    Value::Text(path.display().to_string()),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Text(e.to_string()),
                ]);
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The note column only when an image failed.
    if failed == 0 {
        t.columns.pop();
        for r in &mut t.rows {
            r.pop();
        }
    }
    print_table(&t, args.format.format(), out)?;
    Ok(if failed > 0 { Exit::Failure } else { Exit::Ok })
}

pub fn plot(db: &Path, args: PlotArgs, out: &mut dyn Write) -> Result<Exit> {
    let PlotArgs {
        runs,
        experiment,
        lr,
        output,
        force,
        ..
    } = args;
    let store = Store::open_read_only(db)?;
    let runs: Vec<i64> = runs
        .iter()
        .map(|r| store.resolve(r, Deleted::Avoid))
        .collect::<mlp_runner::Result<_>>()?;
    let (ids, title) = if runs.is_empty() {
        let name = cmp::experiment_name(&store, experiment.as_deref())?;
        (store.live_run_ids(Some(&name), &RunStatus::FINISHED)?, name)
    } else {
        let title = format!(
            "runs {}",
            runs.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        (runs, title)
    };
    let title = clean(&title).into_owned();
    let guard = Guard {
        store: Some(db),
        inputs: &[],
        force,
    };
    // Read (and check) everything before the file is written.
    if lr {
        let mut points = Vec::new();
        for id in &ids {
            let row = store.run(*id)?;
            let cfg = row.config(&store)?;
            if let (Some(acc), RunStatus::Completed) = (row.test_acc, row.status) {
                points.push(plt::LrPoint {
                    learning_rate: cfg.train.learning_rate,
                    test_acc: acc,
                    seed: cfg.train.seed as i64,
                });
            }
        }
        let title = format!("{title}: final test accuracy by learning rate");
        write_atomically(&output, &guard, |tmp| plt::lr_sweep(&points, &title, tmp))?;
    } else {
        let mut curves = Vec::new();
        for id in &ids {
            let row = store.run(*id)?;
            let label = row
                .name
                .split_once('/')
                .map_or(row.name.as_str(), |(_, l)| l)
                .to_string();
            curves.push(plt::Curve {
                label: format!("{id} {}", clean(&label)),
                epochs: store.epochs(*id)?,
            });
        }
        let title = format!("{title}: learning curves");
        write_atomically(&output, &guard, |tmp| {
            plt::learning_curves(&curves, &title, tmp)
        })?;
    }
    writeln!(out, "wrote {} ({} runs)", output.display(), ids.len())?;
    Ok(Exit::Ok)
}

impl CommandFacts for CompareArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for ExportArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for PredictArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for PlotArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}
