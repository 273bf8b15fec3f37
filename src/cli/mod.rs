//! The command line: argument types (clap), dispatch to one module per command, and the outcome as an exit
//! code. Everything a command computes comes from the library; these modules parse, print and handle
//! signals.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use mlp_runner::ErrorKind;
use mlp_runner::report::table::{self, Format};
use mlp_runner::store::Table;

mod bench;
mod browser;
mod data;
mod inspect;
mod manage;
mod merge;
mod progress;
mod report;
mod train;
mod ui;
mod uibench;
mod verify;

const EXAMPLES: &str = "\
Examples:
  runner experiments/lr_sweep.toml          train every run of the sweep (skips runs already done)
  runner plan experiments/lr_sweep.toml     list the runs a spec expands to, and which are done
  runner ls --where 'test_acc > 0.97' --sort -test_acc
  runner show 7                             one run (by id, name or a unique name prefix)
  runner sql 'SELECT * FROM run_summary ORDER BY test_acc DESC'
  runner compare lr_sweep                   configurations over seeds, with 95% intervals
  runner verify 7                           re-train run 7 and compare bit for bit
  runner check                              check every stored bit against its hash (no training)
  runner tag 7 8 baseline                   tag runs; runner note 7 'text'; runner rm 9; runner gc
  runner diff 7 8                           what differs between two runs, down to the weights";

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version,
    about = "Train MLPs on MNIST with mini-batch SGD as a reproducible experiment pipeline",
    long_about = "Train multilayer perceptrons on MNIST with back-propagation and mini-batch SGD.\n\
                  A TOML spec describes the runs (with sweeps); every run is trained deterministically\n\
                  and stored in a SQLite file that plain SQL can query, and can be re-run bit for bit.",
    after_help = EXAMPLES,
    subcommand_negates_reqs = true,
    override_usage = "runner <SPEC> [OPTIONS]      train a spec's runs (the same as runner run <SPEC>)\n       \
                      runner <COMMAND> [ARGS]      any other command (runner <COMMAND> --help)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: train::RunArgs,
}

/// `--db PATH`, on every command that reads or writes the results store.
#[derive(Debug, Args, Clone, Default)]
pub struct DbArg {
    /// The results database [default: results/results.db].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// `--threads N`, on the commands that train (run, resume, verify, bench).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct ThreadsArg {
    /// Threads for the matrix products inside each run (1 to 4) [default: 1]; the bits do not depend
    /// on it. Keep 1 when --jobs trains several runs at once.
    #[arg(allow_negative_numbers = true, long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=4))]
    pub threads: Option<u8>,
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
    Run(train::RunArgs),
    /// Print the runs a spec expands to, with their config hashes and whether they are done; trains nothing.
    #[command(after_help = "Example:\n  runner plan experiments/lr_sweep.toml")]
    Plan(train::PlanArgs),
    /// Re-train stored runs from their stored configs and compare every epoch and the weights bit for
    /// bit (after checking their stored bits against their hashes).
    #[command(
        after_help = "Examples:\n  runner verify 7\n  runner verify lr_sweep/learning_rate=0.1,seed=1\n  \
                      runner verify --experiment lr_sweep\n  runner verify --all"
    )]
    Verify(verify::VerifyArgs),
    /// Check every stored bit against its hash, without training: weights, epoch rows and configs of
    /// every run (or the runs given), and SQLite's own integrity check. Exit 3 if anything is corrupt.
    #[command(after_help = "Examples:\n  runner check\n  runner check 5 6 --db shard-0.db")]
    Check(verify::CheckArgs),
    /// Run a read-only SQL query on the results database and print the rows as they come.
    #[command(
        after_help = "Examples:\n  runner sql 'SELECT * FROM run_summary ORDER BY test_acc DESC'\n  \
                            runner sql --csv 'SELECT run_id, epoch, test_acc FROM epochs'\n  \
                            runner sql --timeout 10 'SELECT count(*) FROM weights'"
    )]
    Sql(inspect::SqlArgs),
    /// Compare an experiment's configurations: the parameters that vary, test accuracy over seeds (mean
    /// with its 95% interval, spread, min, max), diverged runs, time; the best mean marked. With
    /// --baseline, each configuration against one: the difference, its 95% interval, p-value and verdict.
    /// Default: the newest experiment.
    #[command(
        after_help = "Examples:\n  runner compare\n  runner compare lr_sweep --csv\n  \
                      runner compare lr_sweep --baseline learning_rate=0.1\n  runner compare --baseline 5"
    )]
    Compare(report::CompareArgs),
    /// Write a run's weights as a safetensors file (architecture and provenance in its metadata), loadable
    /// by the Python `safetensors` package and PyTorch without this tool.
    #[command(after_help = "Examples:\n  runner export 5 -o model.safetensors\n  \
                            runner export 5 --weights initial -o init.safetensors\n\n\
                            In Python: from safetensors.numpy import load_file; w = load_file('model.safetensors')\n\
                            Tensors: layer1.weight [out, in] (as torch.nn.Linear), layer1.bias [out], layer2....")]
    Export(report::ExportArgs),
    /// Classify digit images with a stored run: any size and either polarity, brought to MNIST's 28 x 28
    /// form (cropped, scaled to 20 x 20, centred by mass) first.
    #[command(
        after_help = "Examples:\n  runner predict 5 digit.png\n  runner predict 5 --top 3 *.png --json"
    )]
    Predict(report::PredictArgs),
    /// Plot learning curves (loss and accuracy per epoch, train and test) of runs or of an experiment, or
    /// with --lr the final test accuracy against learning rate (log axis, a point per seed, the mean line).
    /// PNG or SVG, by the output's extension.
    #[command(
        after_help = "Examples:\n  runner plot --experiment lr_sweep -o curves.png\n  \
                            runner plot 5 6 -o curves.svg\n  runner plot --lr --experiment lr_sweep -o lr.png"
    )]
    Plot(report::PlotArgs),
    /// List stored runs (deleted ones only with --deleted or --all), filtered and sorted.
    #[command(
        after_help = "Examples:\n  runner ls --experiment lr_sweep\n  runner ls --tag baseline\n  \
                      runner ls --where 'test_acc > 0.97 AND learning_rate < 0.5' --sort -test_acc --limit 10\n  \
                      runner ls --deleted"
    )]
    Ls(inspect::LsArgs),
    /// Show one run: parameters, provenance, hashes, tags and note, epochs and stored weights.
    #[command(
        after_help = "Examples:\n  runner show 7\n  runner show lr_sweep/learning_rate=0.1,seed=1\n  \
                            runner show 7 --json\n  runner show 7 --csv"
    )]
    Show(inspect::ShowArgs),
    /// Resume an interrupted run from its last stored epoch (or train a pending or failed one), from its
    /// stored config; `runner <spec>` does the same for every unfinished run of a spec.
    #[command(after_help = "Example:\n  runner resume 7")]
    Resume(train::ResumeArgs),
    /// Merge result stores (e.g. one per shard) into one; a run stored twice must match bit for bit.
    #[command(
        after_help = "Example:\n  runner merge shard-0.db shard-1.db shard-2.db -o results/all.db"
    )]
    Merge(merge::MergeArgs),
    /// Time training, evaluation and loading on this machine, and the efficiency against its own GEMM.
    #[command(
        after_help = "Examples:\n  runner bench\n  runner bench --batch 128 --dtype f32 --reps 5\n  \
                            runner bench --samples 10000 --reps 1   (a quick look)\n  \
                            runner bench --ui   (the dashboard on 10 000 synthetic runs)\n  \
                            runner bench --kernels   (each matrix product alone, best of 30 runs)"
    )]
    Bench(bench::BenchArgs),
    /// Add tags to runs (or take them away with --remove); `ls --tag` finds them.
    #[command(
        override_usage = "runner tag [OPTIONS] <RUN>... <TAG>...",
        after_help = "Examples:\n  runner tag 7 8 baseline paper\n  runner tag lr_sweep/learning_rate=0.1,seed=1 best\n  \
                      runner tag 7 --remove paper"
    )]
    Tag(manage::TagArgs),
    /// Set a run's note (an empty text clears it); shown by `show` and `ls`.
    #[command(after_help = "Example:\n  runner note 7 'lr 0.1 is the tutorial default'")]
    Note(manage::NoteArgs),
    /// Delete runs softly: hidden from ls, compare, plots and the views, not trained again by their spec
    /// (unless --force), until `restore`; `gc` removes them for good. A running run cannot be removed.
    #[command(
        visible_alias = "delete",
        after_help = "Examples:\n  runner rm 9 10\n  runner rm --experiment smoke --status diverged\n  runner restore 9"
    )]
    Rm(manage::RmArgs),
    /// Undo `rm`.
    #[command(after_help = "Examples:\n  runner restore 9\n  runner restore --experiment smoke")]
    Restore(manage::RestoreArgs),
    /// Remove deleted runs and their weights for good, then VACUUM the store; prints the bytes freed.
    #[command(after_help = "Example:\n  runner gc --db results/results.db")]
    Gc(manage::GcArgs),
    /// Two runs side by side: the config and envelope fields that differ, their epochs, and per layer
    /// whether the weights are bit-identical or their largest absolute difference.
    #[command(after_help = "Examples:\n  runner diff 5 6\n  runner diff 5 6 --json")]
    Diff(manage::DiffArgs),
    /// Serve the store read-only to a browser: experiments, runs (filter, sort, compare), one run, live
    /// while a sweep trains. On 127.0.0.1 unless --host says otherwise.
    #[command(
        after_help = "Examples:\n  runner ui\n  runner ui --db results/results.db --port 8080"
    )]
    Ui(ui::UiArgs),
    /// Write the dashboard's views of experiments as one self-contained HTML file (a CI artifact, an
    /// email attachment): data, scripts and styles inline, nothing fetched when it opens.
    #[command(
        after_help = "Examples:\n  runner report -o report.html\n  runner report lr_sweep -o lr_sweep.html"
    )]
    Report(ui::ReportArgs),
    /// Data tools: export the PNG layout, describe a data folder.
    #[command(
        subcommand,
        after_help = "Examples:\n  runner data info data/mnist\n  runner data export-png data/mnist /tmp/mnist-png"
    )]
    Data(data::DataCommand),
}

impl Command {
    /// The command's `--db`, if it takes one.
    fn db(&self) -> Option<&DbArg> {
        Some(match self {
            Command::Run(a) => &a.db,
            Command::Plan(a) => &a.db,
            Command::Verify(a) => &a.db,
            Command::Check(a) => &a.db,
            Command::Sql(a) => &a.db,
            Command::Compare(a) => &a.db,
            Command::Export(a) => &a.db,
            Command::Predict(a) => &a.db,
            Command::Plot(a) => &a.db,
            Command::Ls(a) => &a.db,
            Command::Show(a) => &a.db,
            Command::Resume(a) => &a.db,
            Command::Tag(a) => &a.db,
            Command::Note(a) => &a.db,
            Command::Rm(a) => &a.db,
            Command::Restore(a) => &a.db,
            Command::Gc(a) => &a.db,
            Command::Diff(a) => &a.db,
            Command::Ui(a) => &a.db,
            Command::Report(a) => &a.db,
            Command::Merge(_) | Command::Bench(_) | Command::Data(_) => return None,
        })
    }

    /// The command's `--threads`, if it trains.
    fn threads(&self) -> Option<ThreadsArg> {
        Some(match self {
            Command::Run(a) => a.threads,
            Command::Verify(a) => a.threads,
            Command::Resume(a) => a.threads,
            Command::Bench(a) => a.threads,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Plan(_) => "plan",
            Command::Verify(_) => "verify",
            Command::Check(_) => "check",
            Command::Sql(_) => "sql",
            Command::Compare(_) => "compare",
            Command::Export(_) => "export",
            Command::Predict(_) => "predict",
            Command::Plot(_) => "plot",
            Command::Ls(_) => "ls",
            Command::Show(_) => "show",
            Command::Resume(_) => "resume",
            Command::Merge(_) => "merge",
            Command::Bench(_) => "bench",
            Command::Tag(_) => "tag",
            Command::Note(_) => "note",
            Command::Rm(_) => "rm",
            Command::Restore(_) => "restore",
            Command::Gc(_) => "gc",
            Command::Diff(_) => "diff",
            Command::Ui(_) => "ui",
            Command::Report(_) => "report",
            Command::Data(_) => "data",
        }
    }
}

impl Cli {
    /// Threads for the matrix products: the command's `--threads`, else the top level's, else 1.
    pub fn threads(&self) -> u8 {
        self.command
            .as_ref()
            .and_then(Command::threads)
            .and_then(|t| t.threads)
            .or(self.run.threads.threads)
            .unwrap_or(1)
    }

    /// The store: the command's `--db`, else the top level's (`runner --db x ls`), else the default.
    pub fn db(&self) -> PathBuf {
        self.command
            .as_ref()
            .and_then(Command::db)
            .and_then(|d| d.db.clone())
            .or_else(|| self.run.db.db.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
    }

    /// Refuse options given at the top level that the command would ignore: `runner SPEC ls`,
    /// `runner --db x merge ...`, `runner --force ls`.
    fn check_top_level(&self) -> Result<()> {
        let Some(cmd) = &self.command else {
            return Ok(());
        };
        let usage = |msg: String| Err(mlp_runner::Error::Usage(msg).into());
        let name = cmd.name();
        if let Some(spec) = &self.run.spec {
            return usage(format!(
                "`runner {} {name}`: give a spec to train or a command, not both: `runner {}` trains it, \
                 `runner {name} ...` runs the command",
                mlp_runner::text::clean(&spec.display().to_string()),
                mlp_runner::text::clean(&spec.display().to_string())
            ));
        }
        if self.run.db.db.is_some() && cmd.db().is_none() {
            return usage(format!(
                "`runner {name}` does not use a results database: leave out --db (merge names its inputs and \
                 -o; data and bench read data folders)"
            ));
        }
        if self.run.threads.threads.is_some() && cmd.threads().is_none() {
            return usage(format!(
                "`runner {name}` does not train: --threads applies to run, resume, verify and bench"
            ));
        }
        if let Some(flag) = self.run.training_flag() {
            return usage(format!(
                "{flag} is an option of training (`runner SPEC` or `runner run SPEC`), not of `runner {name}`"
            ));
        }
        Ok(())
    }
}

/// What `main` should exit with after a command that did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A verify mismatch, a run that failed, a merge that is missing runs.
    Failure,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

const SUBCOMMANDS: &[&str] = &[
    "run", "plan", "verify", "check", "sql", "ls", "show", "resume", "merge", "bench", "compare",
    "export", "predict", "plot", "data", "help", "tag", "note", "rm", "restore", "gc", "diff",
    "ui", "report",
];

/// Words users type for a command under another name.
const ALIASES: &[(&str, &str)] = &[
    ("delete", "rm"),
    ("del", "rm"),
    ("remove", "rm"),
    ("list", "ls"),
    ("info", "show"),
    ("undelete", "restore"),
    ("train", "run"),
    ("query", "sql"),
    ("dashboard", "ui"),
    ("serve", "ui"),
];

/// The default store, whose folder is created when missing.
pub(crate) const DEFAULT_DB: &str = "results/results.db";

/// A store about to be written at `path`: the folder of an explicitly given path must exist (a mistyped
/// `--db /nonexistent/dir/x.db` is refused, not created); the default `results/` is created.
pub fn check_store_folder(path: &Path) -> Result<()> {
    if path == Path::new(DEFAULT_DB) {
        return Ok(());
    }
    match path.parent() {
        Some(parent) if parent.exists() && !parent.is_dir() => {
            bail!(mlp_runner::Error::Usage(format!(
                "{}: cannot create the folder {}: it is a file; give another path",
                path.display(),
                parent.display()
            )))
        }
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            bail!(mlp_runner::Error::Usage(format!(
                "{}: the folder {} does not exist; create it (mkdir -p {}) or give another path",
                path.display(),
                parent.display(),
                parent.display()
            )))
        }
        _ => Ok(()),
    }
}

/// Run the parsed command line, writing reports to `out`.
pub fn execute(cli: Cli, out: &mut dyn Write) -> Result<Exit> {
    cli.check_top_level()?;
    let db_path = cli.db();
    let db = db_path.as_path();
    if trains(&cli) || writes(&cli) {
        check_store_folder(db)?;
    }
    match cli.command {
        None => match &cli.run.spec {
            Some(spec) => train::run(spec, db, &cli.run, out),
            None => bail!(mlp_runner::Error::Usage(format!(
                "give a spec to train or a command; see `runner --help`.\n\n{EXAMPLES}"
            ))),
        },
        Some(Command::Run(args)) => match &args.spec {
            Some(spec) => train::run(spec, db, &args, out),
            None => bail!(mlp_runner::Error::Usage(
                "`runner run` needs a spec, e.g. runner run experiments/smoke.toml".into(),
            )),
        },
        Some(Command::Plan(args)) => train::plan(&args, db, out),
        Some(Command::Resume(args)) => train::resume(db, args, out),
        Some(Command::Verify(args)) => verify::verify(db, args, out),
        Some(Command::Check(args)) => verify::check(db, args, out),
        Some(Command::Sql(args)) => inspect::sql(db, args, out),
        Some(Command::Ls(args)) => inspect::ls(db, args, out),
        Some(Command::Show(args)) => inspect::show(db, args, out),
        Some(Command::Compare(args)) => report::compare(db, args, out),
        Some(Command::Export(args)) => report::export(db, args, out),
        Some(Command::Predict(args)) => report::predict(db, args, out),
        Some(Command::Plot(args)) => report::plot(db, args, out),
        Some(Command::Merge(args)) => merge::merge(args, out),
        Some(Command::Bench(args)) => bench::bench(args, out),
        Some(Command::Tag(args)) => manage::tag(db, args, out),
        Some(Command::Note(args)) => manage::note(db, args, out),
        Some(Command::Rm(args)) => manage::rm(db, args, out),
        Some(Command::Restore(args)) => manage::restore(db, args, out),
        Some(Command::Gc(args)) => manage::gc(db, args, out),
        Some(Command::Diff(args)) => manage::diff(db, args, out),
        Some(Command::Ui(args)) => ui::serve(db, args, out),
        Some(Command::Report(args)) => ui::report(db, args, out),
        Some(Command::Data(cmd)) => data::data(cmd, out),
    }
}

/// Does this command change the store without training (tags, notes, deletes)?
fn writes(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Some(
            Command::Tag(_)
                | Command::Note(_)
                | Command::Rm(_)
                | Command::Restore(_)
                | Command::Gc(_)
        )
    )
}

/// Does this command train (and so write log lines from worker threads to standard output)?
pub fn trains(cli: &Cli) -> bool {
    matches!(
        cli.command,
        None | Some(Command::Run(_)) | Some(Command::Resume(_))
    )
}

/// The exit code for an error: 0 for a closed output pipe (`runner ls | head -1`), 3 for a corrupt store,
/// 70 for a bug, 2 for everything else (bad input, an environment problem).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                c.downcast_ref::<mlp_runner::Error>(),
                Some(mlp_runner::Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::BrokenPipe
            )
    }) {
        return 0;
    }
    match err
        .chain()
        .find_map(|c| c.downcast_ref::<mlp_runner::Error>())
        .map(mlp_runner::Error::kind)
    {
        Some(ErrorKind::Corrupt) => 3,
        Some(ErrorKind::Internal) => 70,
        _ => 2,
    }
}

/// Standard output (or any writer) whose errors say that they happened writing it; their kind is kept,
/// so a closed pipe is still told apart.
pub struct Labelled<W>(pub W);

impl<W: Write> Write for Labelled<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(label)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(label)
    }
}

fn label(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("writing to standard output: {e}"))
}

/// Print a table in the chosen format.
fn print_table(t: &Table, format: Format, out: &mut dyn Write) -> Result<()> {
    use std::io::IsTerminal;
    table::write_on(t, format, out, std::io::stdout().is_terminal())?;
    Ok(())
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
        if matches!(
            arg.as_str(),
            "--db" | "--threads" | "--jobs" | "-j" | "--shard" | "--stale-after" | "--heartbeat"
        ) {
            skip_value = true;
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        if SUBCOMMANDS.contains(&arg.as_str()) || Path::new(&arg).exists() {
            return None;
        }
        return suggest(&arg).map(|cmd| {
            format!(
                "`{}` is neither a spec file nor a command; did you mean `runner {cmd}`?",
                mlp_runner::text::clean(&arg)
            )
        });
    }
    None
}

/// The command a mistyped or other-named word probably means: `delete` is `rm`, `plto` is `plot`.
pub fn suggest(word: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == word)
        .map(|(_, cmd)| *cmd)
        .or_else(|| mlp_runner::text::nearest(word, SUBCOMMANDS))
}
