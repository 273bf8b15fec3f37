//! The command line: argument types (clap) and one function per subcommand, each calling the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use crate::data::{self, DataCache, DataFormat};
use crate::error::{Error, Result};
use crate::merge::{self, Shard};
use crate::progress::Progress;
use crate::spec;
use crate::spec::Dtype;
use crate::store::{Store, Table};
use crate::sweep::{self, Decision};
use crate::table::{self, Format};
use crate::verify;
use crate::{bench, export, plot, report};

const EXAMPLES: &str = "\
Examples:
  runner experiments/lr_sweep.toml          train every run of the sweep (skips runs already done)
  runner plan experiments/lr_sweep.toml     list the runs a spec expands to, and which are done
  runner ls                                 list stored runs
  runner show 7                             one run: config, provenance, epochs, weights
  runner sql 'SELECT * FROM run_summary ORDER BY test_acc DESC'
  runner verify 7                           re-train run 7 and compare bit for bit
  runner data export-png data/mnist /tmp/mnist-png";

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Train MLPs on MNIST with mini-batch SGD as a reproducible experiment pipeline",
    long_about = "Train multilayer perceptrons on MNIST with back-propagation and mini-batch SGD.\n\
                  A TOML spec describes the runs (with sweeps); every run is trained deterministically\n\
                  and stored in a SQLite file that plain SQL can query, and can be re-run bit for bit.",
    after_help = EXAMPLES,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// The results database.
    #[arg(
        long,
        global = true,
        default_value = "results/results.db",
        value_name = "PATH"
    )]
    pub db: PathBuf,
    /// Threads for the matrix products inside each run (1 to 4); the bits do not depend on it. Use 1
    /// with --jobs > 1.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub threads: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

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
    #[arg(long, short = 'j', default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub jobs: u16,
    /// Take over a `running` run whose owner has given no sign of life for this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub stale_after: u64,
    /// Train only shard I of N (0 <= I < N), chosen by each run's config hash. Without it, Slurm's
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or Kubernetes' JOB_COMPLETION_INDEX (with
    /// MLP_RUNNER_SHARD_COUNT) are used when set.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct FormatArgs {
    /// Print comma-separated values.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Print a JSON array of objects.
    #[arg(long)]
    pub json: bool,
}

impl FormatArgs {
    fn format(self) -> Format {
        if self.csv {
            Format::Csv
        } else if self.json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train every run of a spec that is not already done (the same as `runner <SPEC>`).
    #[command(after_help = "Example:\n  runner run experiments/smoke.toml --db /tmp/smoke.db")]
    Run(RunArgs),
    /// Print the runs a spec expands to, with their config hashes and whether they are done; trains nothing.
    #[command(after_help = "Example:\n  runner plan experiments/lr_sweep.toml")]
    Plan {
        spec: PathBuf,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Re-train stored runs from their stored configs and compare every epoch and the weights bit for bit.
    #[command(
        after_help = "Examples:\n  runner verify 7\n  runner verify --experiment lr_sweep\n  runner verify --all"
    )]
    Verify {
        /// Run ids to verify.
        #[arg(required_unless_present_any = ["all", "experiment"])]
        runs: Vec<i64>,
        /// Verify every completed or diverged run.
        #[arg(long, conflicts_with = "runs")]
        all: bool,
        /// Verify the completed or diverged runs of this experiment.
        #[arg(long, conflicts_with = "runs", value_name = "NAME")]
        experiment: Option<String>,
    },
    /// Run a read-only SQL query on the results database and print the result.
    #[command(
        after_help = "Examples:\n  runner sql 'SELECT * FROM run_summary ORDER BY test_acc DESC'\n  \
                            runner sql --csv 'SELECT run_id, epoch, test_acc FROM epochs'"
    )]
    Sql {
        query: String,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Compare an experiment's configurations: the parameters that vary, test accuracy over seeds (mean,
    /// spread, min, max), diverged runs, time; the best mean marked. Default: the newest experiment.
    #[command(after_help = "Examples:\n  runner compare\n  runner compare lr_sweep --csv")]
    Compare {
        experiment: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Write a run's weights as a safetensors file (architecture and provenance in its metadata), loadable
    /// by the Python `safetensors` package and PyTorch without this tool.
    #[command(after_help = "Examples:\n  runner export 5 -o model.safetensors\n  \
                            runner export 5 --weights initial -o init.safetensors\n\n\
                            In Python: from safetensors.numpy import load_file; w = load_file('model.safetensors')\n\
                            Tensors: layer1.weight [out, in] (as torch.nn.Linear), layer1.bias [out], layer2....")]
    Export(ExportArgs),
    /// Classify digit images with a stored run: any size and either polarity, brought to MNIST's 28 x 28
    /// form (cropped, scaled to 20 x 20, centred by mass) first.
    #[command(
        after_help = "Examples:\n  runner predict 5 digit.png\n  runner predict 5 --top 3 *.png --json"
    )]
    Predict(PredictArgs),
    /// Plot learning curves (loss and accuracy per epoch, train and test) of runs or of an experiment, or
    /// with --lr the final test accuracy against learning rate (log axis, a point per seed, the mean line).
    /// PNG or SVG, by the output's extension.
    #[command(
        after_help = "Examples:\n  runner plot --experiment lr_sweep -o curves.png\n  \
                            runner plot 5 6 -o curves.svg\n  runner plot --lr --experiment lr_sweep -o lr.png"
    )]
    Plot(PlotArgs),
    /// List stored runs.
    #[command(after_help = "Example:\n  runner ls --experiment lr_sweep")]
    Ls {
        /// Only the runs of this experiment.
        #[arg(long, value_name = "NAME")]
        experiment: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Show one run: parameters, provenance, hashes, epochs and stored weights.
    #[command(after_help = "Examples:\n  runner show 7\n  runner show 7 --json")]
    Show {
        run: i64,
        /// Print one JSON object: the run's row, its epochs, and its stored weights' shapes.
        #[arg(long)]
        json: bool,
    },
    /// Resume an interrupted run from its last stored epoch (or train a pending or failed one), from its
    /// stored config; `runner <spec>` does the same for every unfinished run of a spec.
    #[command(after_help = "Example:\n  runner resume 7")]
    Resume(ResumeArgs),
    /// Merge result stores (e.g. one per shard) into one; a run stored twice must match bit for bit.
    #[command(
        after_help = "Example:\n  runner merge shard-0.db shard-1.db shard-2.db -o results/all.db"
    )]
    Merge(MergeArgs),
    /// Time training, evaluation and loading on this machine, and the efficiency against its own GEMM.
    #[command(
        after_help = "Examples:\n  runner bench\n  runner bench --batch 128 --dtype f32 --reps 5\n  \
                            runner bench --samples 10000 --reps 1   (a quick look)"
    )]
    Bench(BenchArgs),
    /// Data tools.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub run: i64,
    /// Take the run over if its owner has given no sign of life for this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub stale_after: u64,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The stores to merge (read-only).
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The store to merge into (created if needed).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The data folder to load and train on.
    #[arg(long, default_value = "data/mnist")]
    pub data: String,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,128")]
    pub batch: Vec<usize>,
    /// f32, f64 or both, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "f32,f64", value_parser = parse_dtype)]
    pub dtype: Vec<Dtype>,
    /// Timed epochs per configuration (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub reps: u16,
    /// Training samples per timed epoch (default: all).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "784,512,10")]
    pub sizes: Vec<usize>,
    /// Also time decoding this PNG-layout folder (see `runner data export-png`).
    #[arg(long, value_name = "DIR")]
    pub png: Option<String>,
    /// Skip timing a 4-run sweep with --jobs 1 against --jobs 2.
    #[arg(long)]
    pub no_jobs: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub run: i64,
    /// Output file.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Which weights: final (default), initial, or checkpoint (the latest epoch of an unfinished run).
    #[arg(long, default_value = "final", value_parser = ["final", "initial", "checkpoint"])]
    pub weights: String,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    pub run: i64,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image, most probable first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Runs to plot (default: the finished runs of --experiment, or of the newest experiment).
    pub runs: Vec<i64>,
    /// The experiment whose finished runs to plot (default: the newest).
    #[arg(long, value_name = "NAME", conflicts_with = "runs")]
    pub experiment: Option<String>,
    /// Final test accuracy against learning rate instead of learning curves.
    #[arg(long)]
    pub lr: bool,
    /// The image to write: .png or .svg.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the PNG-folder layout (training/<digit>/*.png, testing/<digit>/*.png) from a data folder.
    #[command(after_help = "Example:\n  runner data export-png data/mnist /tmp/mnist-png")]
    ExportPng { dir: PathBuf, out: PathBuf },
    /// Print what a data folder holds: format, counts, image size, SHA-256 of the decoded samples.
    #[command(after_help = "Example:\n  runner data info data/mnist")]
    Info {
        dir: PathBuf,
        /// auto, idx or png.
        #[arg(long, default_value = "auto", value_parser = parse_format)]
        format: DataFormat,
    },
}

fn parse_dtype(s: &str) -> std::result::Result<Dtype, String> {
    match s {
        "f32" => Ok(Dtype::F32),
        "f64" => Ok(Dtype::F64),
        _ => Err("expected f32 or f64".into()),
    }
}

fn parse_format(s: &str) -> std::result::Result<DataFormat, String> {
    match s {
        "auto" => Ok(DataFormat::Auto),
        "idx" => Ok(DataFormat::Idx),
        "png" => Ok(DataFormat::Png),
        _ => Err("expected auto, idx or png".into()),
    }
}

/// What `main` should exit with after a command that did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A verify mismatch or a run that failed.
    Failure,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

const SUBCOMMANDS: &[&str] = &[
    "run", "plan", "verify", "sql", "ls", "show", "resume", "merge", "bench", "compare", "export",
    "predict", "plot", "data", "help",
];

/// Run the parsed command line, writing reports to `out`.
pub fn execute(cli: Cli, out: &mut dyn Write) -> Result<Exit> {
    match cli.command {
        None => match &cli.run.spec {
            Some(spec) => cmd_run(spec, &cli.db, &cli.run, out),
            None => Err(Error::Usage(format!(
                "give a spec to train or a command; see `runner --help`.\n\n{EXAMPLES}"
            ))),
        },
        Some(Command::Run(args)) => match &args.spec {
            Some(spec) => cmd_run(spec, &cli.db, &args, out),
            None => Err(Error::Usage(
                "`runner run` needs a spec, e.g. runner run experiments/smoke.toml".into(),
            )),
        },
        Some(Command::Plan { spec, format }) => cmd_plan(&spec, &cli.db, format.format(), out),
        Some(Command::Verify {
            runs,
            all,
            experiment,
        }) => cmd_verify(&cli.db, runs, all, experiment, out),
        Some(Command::Sql { query, format }) => {
            let store = Store::open_read_only(&cli.db)?;
            print_table(&store.query(&query)?, format.format(), out);
            Ok(Exit::Ok)
        }
        Some(Command::Compare { experiment, format }) => {
            let store = Store::open_read_only(&cli.db)?;
            let name = report::experiment_name(&store, experiment.as_deref())?;
            if format.format() == Format::Text {
                let _ = writeln!(out, "experiment {name}:");
            }
            print_table(&report::compare(&store, &name)?, format.format(), out);
            Ok(Exit::Ok)
        }
        Some(Command::Export(args)) => cmd_export(&cli.db, args, out),
        Some(Command::Predict(args)) => cmd_predict(&cli.db, args, out),
        Some(Command::Plot(args)) => cmd_plot(&cli.db, args, out),
        Some(Command::Ls { experiment, format }) => {
            cmd_ls(&cli.db, experiment, format.format(), out)
        }
        Some(Command::Show { run, json }) => cmd_show(&cli.db, run, json, out),
        Some(Command::Bench(args)) => cmd_bench(args, out),
        Some(Command::Merge(args)) => cmd_merge(args, out),
        Some(Command::Resume(args)) => cmd_resume(&cli.db, args, out),
        Some(Command::Data(DataCommand::ExportPng { dir, out: dest })) => {
            let ds = data::load(&dir, DataFormat::Idx)?;
            let (train, test) = data::export_png(&ds, &dest)?;
            let _ = writeln!(
                out,
                "wrote {train} training and {test} test images to {}",
                dest.display()
            );
            Ok(Exit::Ok)
        }
        Some(Command::Data(DataCommand::Info { dir, format })) => {
            let ds = data::load(&dir, format)?;
            let _ = writeln!(
                out,
                "{}: format {:?}, {} training and {} test images of {}x{}, dataset sha256 {}",
                dir.display(),
                ds.format,
                ds.train.len(),
                ds.test.len(),
                ds.train.rows,
                ds.train.cols,
                ds.sha256(None, None)
            );
            Ok(Exit::Ok)
        }
    }
}

fn print_table(t: &Table, format: Format, out: &mut dyn Write) {
    // A closed pipe (`runner sql ... | head`) is not an error.
    let _ = table::write(t, format, out);
}

/// For a command line clap rejected: if its first positional word is neither a file nor a command but close
/// to one, the message to print instead of clap's.
pub fn suggest_command(args: impl Iterator<Item = String>) -> Option<String> {
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if arg == "--db" {
            skip_value = true;
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        if SUBCOMMANDS.contains(&arg.as_str()) || Path::new(&arg).exists() {
            return None;
        }
        return spec::nearest(&arg, SUBCOMMANDS).map(|cmd| {
            format!("`{arg}` is neither a spec file nor a command; did you mean `runner {cmd}`?")
        });
    }
    None
}

fn load_spec(path: &Path) -> Result<spec::Experiment> {
    if !path.exists() && path.extension().is_none() {
        let word = path.to_string_lossy();
        if let Some(cmd) = spec::nearest(&word, SUBCOMMANDS) {
            return Err(Error::Usage(format!(
                "`{word}` is neither a spec file nor a command; did you mean `runner {cmd}`?"
            )));
        }
    }
    Ok(spec::load(path)?)
}

fn cmd_run(spec_path: &Path, db: &Path, args: &RunArgs, out: &mut dyn Write) -> Result<Exit> {
    train_experiment(&load_spec(spec_path)?, db, args, out)
}

fn train_experiment(
    exp: &spec::Experiment,
    db: &Path,
    args: &RunArgs,
    out: &mut dyn Write,
) -> Result<Exit> {
    let opts = sweep::Options {
        force: args.force,
        jobs: match args.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        },
        stale_after: std::time::Duration::from_secs(args.stale_after),
        shard: match args.shard {
            Some(s) => Some((s, "--shard".to_string())),
            None => Shard::from_env(|k| std::env::var(k).ok()).map_err(Error::Usage)?,
        },
    };
    let stop = interrupt_flag();
    use std::io::IsTerminal;
    let mut progress =
        Progress::new(std::io::stdout().is_terminal() && std::io::stderr().is_terminal());
    let reports = sweep::run(exp, db, &opts, &mut progress, &stop);
    progress.finish();
    let reports = reports?;
    use rusqlite::types::Value as V;
    let real = |v: Option<f64>| v.map(V::Real).unwrap_or(V::Null);
    // The parameters the sweep varies, as columns (the run name when nothing varies).
    let keys: Vec<String> = reports
        .first()
        .map(|r| r.overrides.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let mut columns = vec!["run_id".to_string()];
    if keys.is_empty() {
        columns.push("name".into());
    }
    columns.extend(
        keys.iter()
            .map(|k| k.rsplit('.').next().unwrap_or(k).to_string()),
    );
    columns.extend(["status", "test_acc", "test_loss", "seconds"].map(String::from));
    let mut t = Table {
        columns,
        rows: Vec::new(),
    };
    for r in &reports {
        let status = if r.trained_here || r.status != "completed" {
            r.status.clone()
        } else {
            format!("{} (earlier)", r.status)
        };
        let mut row = vec![V::Integer(r.run_id)];
        if keys.is_empty() {
            row.push(V::Text(r.name.clone()));
        }
        row.extend(r.overrides.iter().map(|(_, v)| match v {
            toml::Value::Integer(i) => V::Integer(*i),
            toml::Value::Float(f) => V::Real(*f),
            toml::Value::String(s) => V::Text(s.clone()),
            other => V::Text(other.to_string()),
        }));
        row.extend([
            V::Text(status),
            real(r.test_acc),
            real(r.test_loss),
            real(r.seconds.map(|s| (s * 100.0).round() / 100.0)),
        ]);
        t.rows.push(row);
    }
    let _ = writeln!(out);
    print_table(&t, Format::Text, out);
    let _ = writeln!(
        out,
        "\nresults in {}; e.g. runner --db {} ls",
        db.display(),
        db.display()
    );
    if stop.load(Ordering::SeqCst) {
        let _ = writeln!(out, "interrupted: run the same command again to resume");
        return Ok(Exit::Interrupted);
    }
    let unfinished = reports
        .iter()
        .filter(|r| matches!(r.status.as_str(), "failed" | "interrupted"));
    Ok(if unfinished.count() > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

/// A flag set by the first SIGINT or SIGTERM; a second one exits at once (code 130).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit is checked before the flag is set by this signal.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

fn cmd_plan(spec_path: &Path, db: &Path, format: Format, out: &mut dyn Write) -> Result<Exit> {
    let exp = load_spec(spec_path)?;
    sweep::check_data(&exp, &mut DataCache::default())?;
    let store = if db.exists() {
        Some(Store::open_read_only(db)?)
    } else {
        None
    };
    let decisions = sweep::plan(&exp, store.as_ref())?;
    use rusqlite::types::Value as V;
    let mut t = Table {
        columns: ["#", "name", "config_hash", "sets", "state"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for (i, (run, d)) in exp.runs.iter().zip(&decisions).enumerate() {
        let sets: Vec<String> = run
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let state = match d {
            Decision::Train { resume: None } => "to train".to_string(),
            Decision::Train {
                resume: Some((id, status)),
            } => format!("to train: run {id} ({status}) is resumed or retried"),
            Decision::Skip { run_id, status } => format!("done: run {run_id} ({status})"),
        };
        t.rows.push(vec![
            V::Integer(i as i64 + 1),
            V::Text(run.name.clone()),
            V::Text(run.config.hash()[..12].to_string()),
            V::Text(sets.join(" ")),
            V::Text(state),
        ]);
    }
    if format == Format::Text {
        let _ = writeln!(
            out,
            "experiment {} ({}): {} runs",
            exp.name,
            exp.path,
            exp.runs.len()
        );
    }
    print_table(&t, format, out);
    Ok(Exit::Ok)
}

fn cmd_verify(
    db: &Path,
    runs: Vec<i64>,
    all: bool,
    experiment: Option<String>,
    out: &mut dyn Write,
) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let ids = if all || experiment.is_some() {
        let ids = store.run_ids(experiment.as_deref(), &["completed", "diverged"])?;
        if ids.is_empty() {
            return Err(Error::Usage(match experiment {
                Some(e) => format!(
                    "no completed or diverged runs of experiment `{e}` in {}",
                    db.display()
                ),
                None => format!("no completed or diverged runs in {}", db.display()),
            }));
        }
        ids
    } else {
        runs
    };
    let mut cache = DataCache::default();
    let mut mismatches = 0;
    for id in ids {
        let r = verify::verify_run(&store, &mut cache, id)?;
        match &r.difference {
            None => {
                let _ = writeln!(
                    out,
                    "run {id} {}: identical (weights sha256 {})",
                    r.name, r.weights_sha256
                );
            }
            Some(d) => {
                mismatches += 1;
                let _ = writeln!(out, "run {id} {}: MISMATCH: {d}", r.name);
            }
        }
        for (field, stored, now) in &r.envelope_diffs {
            let _ = writeln!(
                out,
                "  envelope differs: {field}: stored {stored}, now {now}"
            );
        }
    }
    Ok(if mismatches > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

fn cmd_ls(
    db: &Path,
    experiment: Option<String>,
    format: Format,
    out: &mut dyn Write,
) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let filter = match &experiment {
        Some(e) => format!("WHERE experiment = '{}'", e.replace('\'', "''")),
        None => String::new(),
    };
    let t = store.query(&format!(
        "SELECT run_id, experiment, name, status, epochs_done || '/' || epochs AS epochs, test_acc, test_loss,
                round(seconds, 2) AS seconds
         FROM run_summary {filter} ORDER BY run_id"
    ))?;
    print_table(&t, format, out);
    Ok(Exit::Ok)
}

fn cmd_show(db: &Path, run: i64, json: bool, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let row = store.run(run)?;
    let t = store.query(&format!("SELECT * FROM runs WHERE id = {run}"))?;
    let epochs = store.query(&format!(
        "SELECT epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds
         FROM epochs WHERE run_id = {run} ORDER BY epoch"
    ))?;
    let weights = store.query(&format!(
        "SELECT kind, epoch, layer, param, shape, dtype, length(data) AS bytes FROM weights
         WHERE run_id = {run} ORDER BY kind = 'final', layer, param = 'bias'"
    ))?;
    if json {
        let value = serde_json::json!({
            "run": table::json_rows(&t).get(0).cloned().unwrap_or_default(),
            "epochs": table::json_rows(&epochs),
            "weights": table::json_rows(&weights),
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(Exit::Ok);
    }
    let _ = writeln!(
        out,
        "run {run}: {} (experiment {} #{})",
        row.name, row.experiment, row.experiment_id
    );
    let width = t.columns.iter().map(|c| c.len()).max().unwrap_or(0);
    for (c, v) in t.columns.iter().zip(&t.rows[0]) {
        if c == "config_toml" || c == "name" || c == "id" {
            continue;
        }
        let _ = writeln!(out, "  {c:<width$}  {}", table::cell(v));
    }
    let _ = writeln!(out, "\nresolved config:");
    for line in row.config_toml.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "\nepochs:");
    print_table(&epochs, Format::Text, out);
    let _ = writeln!(out, "\nweights:");
    print_table(&weights, Format::Text, out);
    Ok(Exit::Ok)
}

fn cmd_resume(db: &Path, args: ResumeArgs, out: &mut dyn Write) -> Result<Exit> {
    let ResumeArgs { run, stale_after } = args;
    let exp = {
        let store = Store::open_read_only(db)?;
        let row = store.run(run)?;
        if matches!(row.status.as_str(), "completed" | "diverged") {
            return Err(Error::Usage(format!(
                "run {run} ({}) is {} already; nothing to resume",
                row.name, row.status
            )));
        }
        let config = spec::RunConfig::from_toml(&row.config_toml).map_err(|e| {
            Error::Usage(format!("run {run}: its stored config does not parse: {e}"))
        })?;
        spec::Experiment {
            name: row.experiment,
            description: String::new(),
            path: format!("(stored config of run {run})"),
            text: row.config_toml,
            runs: vec![spec::PlannedRun {
                name: row.name,
                overrides: Vec::new(),
                config,
            }],
        }
    };
    let args = RunArgs {
        spec: None,
        force: false,
        jobs: 1,
        stale_after,
        // The one shard of one: a scheduler's shard variables must not filter this run out.
        shard: Some(Shard { index: 0, count: 1 }),
    };
    train_experiment(&exp, db, &args, out)
}

fn cmd_merge(args: MergeArgs, out: &mut dyn Write) -> Result<Exit> {
    let MergeArgs { sources, output } = args;
    let srcs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let r = merge::merge(&srcs, &output)?;
    let _ = writeln!(
        out,
        "merged {} stores into {}: {} runs added, {} already there and identical, {} unfinished runs \
         not copied, {} experiments added",
        sources.len(),
        output.display(),
        r.runs_added,
        r.runs_identical,
        r.runs_unfinished,
        r.experiments_added
    );
    for c in &r.conflicts {
        let _ = writeln!(out, "REPRODUCIBILITY FAILURE: {c}");
    }
    Ok(if r.conflicts.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

fn cmd_bench(args: BenchArgs, out: &mut dyn Write) -> Result<Exit> {
    let BenchArgs {
        data,
        batch,
        dtype,
        reps,
        samples,
        sizes,
        png,
        no_jobs,
        format,
    } = args;
    if sizes.len() < 2 || sizes.contains(&0) || batch.contains(&0) {
        return Err(Error::Usage(
            "--sizes needs two or more widths >= 1, --batch sizes >= 1".into(),
        ));
    }
    let opts = bench::Options {
        data_dir: data,
        sizes,
        samples,
        reps: reps as usize,
        batches: batch,
        dtypes: dtype,
        png_dir: png,
        jobs_check: !no_jobs,
    };
    let log = |line: &str| eprintln!("{line}");
    let bench::Report { rows, notes } = bench::run(&opts, &log)?;
    use rusqlite::types::Value as V;
    let t = Table {
        columns: [
            "what",
            "dtype",
            "batch",
            "s/epoch",
            "samples/s",
            "GFLOP/s",
            "GEMM GFLOP/s",
            "efficiency",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    V::Text(r.what.clone()),
                    V::Text(r.dtype.as_str().into()),
                    V::Integer(r.batch as i64),
                    V::Real((r.seconds * 1000.0).round() / 1000.0),
                    V::Integer(r.samples_per_s.round() as i64),
                    V::Real((r.gflops * 10.0).round() / 10.0),
                    V::Real((r.gemm_gflops * 10.0).round() / 10.0),
                    V::Real((r.efficiency * 100.0).round() / 100.0),
                ]
            })
            .collect(),
    };
    print_table(&t, format.format(), out);
    if format.format() == Format::Text {
        for (k, v) in notes {
            let _ = writeln!(out, "{k}: {v}");
        }
    }
    Ok(Exit::Ok)
}

fn cmd_export(db: &Path, args: ExportArgs, out: &mut dyn Write) -> Result<Exit> {
    let ExportArgs {
        run,
        output,
        weights,
    } = args;
    let store = Store::open_read_only(db)?;
    let m = export::load(&store, run, &weights)?;
    export::write_safetensors(&m, &output)?;
    let _ = writeln!(
        out,
        "wrote run {run}'s {weights} weights ({} tensors, {}, sha256 {}) to {}",
        m.params.tensors.len(),
        m.params.dtype.as_str(),
        m.params.sha256(),
        output.display()
    );
    Ok(Exit::Ok)
}

fn cmd_predict(db: &Path, args: PredictArgs, out: &mut dyn Write) -> Result<Exit> {
    let PredictArgs {
        run,
        images,
        top,
        format,
    } = args;
    let store = Store::open_read_only(db)?;
    let m = export::load(&store, run, "final")?;
    use rusqlite::types::Value as V;
    let mut t = Table {
        columns: vec![
            "image".into(),
            "rank".into(),
            "class".into(),
            "probability".into(),
        ],
        rows: Vec::new(),
    };
    for path in &images {
        let p = export::predict_file(&m, path)?;
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        for (rank, &c) in order.iter().take(top as usize).enumerate() {
            t.rows.push(vec![
                V::Text(path.display().to_string()),
                V::Integer(rank as i64 + 1),
                V::Integer(c as i64),
                V::Real((p[c] * 1e4).round() / 1e4),
            ]);
        }
    }
    print_table(&t, format.format(), out);
    Ok(Exit::Ok)
}

fn cmd_plot(db: &Path, args: PlotArgs, out: &mut dyn Write) -> Result<Exit> {
    let PlotArgs {
        runs,
        experiment,
        lr,
        output,
    } = args;
    let store = Store::open_read_only(db)?;
    let (ids, title) = if runs.is_empty() {
        let name = report::experiment_name(&store, experiment.as_deref())?;
        (
            store.run_ids(Some(&name), &["completed", "diverged"])?,
            name,
        )
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
    if lr {
        let mut points = Vec::new();
        for id in &ids {
            let row = store.run(*id)?;
            let cfg = spec::RunConfig::from_toml(&row.config_toml).map_err(Error::Usage)?;
            if let (Some(acc), "completed") = (row.test_acc, row.status.as_str()) {
                points.push(plot::LrPoint {
                    learning_rate: cfg.train.learning_rate,
                    test_acc: acc,
                    seed: cfg.train.seed as i64,
                });
            }
        }
        plot::lr_sweep(
            &points,
            &format!("{title}: final test accuracy by learning rate"),
            &output,
        )?;
    } else {
        let mut curves = Vec::new();
        for id in &ids {
            let row = store.run(*id)?;
            let label = row
                .name
                .split_once('/')
                .map_or(row.name.as_str(), |(_, l)| l)
                .to_string();
            curves.push(plot::Curve {
                label: format!("{id} {label}"),
                epochs: store.epochs(*id)?,
            });
        }
        plot::learning_curves(
            &curves,
            &format!("{title}: learning curves (test thick, train thin)"),
            &output,
        )?;
    }
    let _ = writeln!(out, "wrote {} ({} runs)", output.display(), ids.len());
    Ok(Exit::Ok)
}
