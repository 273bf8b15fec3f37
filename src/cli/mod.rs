//! The command line: argument types (clap), dispatch to one module per command, and the outcome as an exit
//! code. Everything a command computes comes from the library; these modules parse, print and handle
//! signals.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use args::{CommandFacts, DbArg, ThreadsArg, check_store_folder};
pub use args::{DEFAULT_DB, Exit};
use clap::{Parser, Subcommand};
use mlp_runner::ErrorKind;

mod args;
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

/// Declare the commands once (see the invocation below): `commands! { $(#[attrs])* Variant(Args) = "name"
/// => |db, args, out| body, ... }` makes the `Command` enum for clap, `Command::name`, `db`, `threads`,
/// `trains`, `writes` (from each argument type's [`CommandFacts`]), `Command::execute`, and `SUBCOMMANDS`.
macro_rules! commands {
    ($( $(#[$meta:meta])* $variant:ident($args:ty) = $name:literal => $exec:expr ),* $(,)?) => {
        #[derive(Debug, Subcommand)]
        pub enum Command {
            $( $(#[$meta])* $variant($args), )*
        }

        impl Command {
            fn name(&self) -> &'static str {
                match self { $( Command::$variant(_) => $name, )* }
            }

            fn facts(&self) -> &dyn CommandFacts {
                match self { $( Command::$variant(a) => a, )* }
            }

            /// The command's `--db`, if it takes one.
            fn db(&self) -> Option<&DbArg> {
                self.facts().db()
            }

            /// The command's `--threads`, if it trains.
            fn threads(&self) -> Option<ThreadsArg> {
                self.facts().threads()
            }

            fn trains(&self) -> bool {
                self.facts().trains()
            }

            fn writes(&self) -> bool {
                self.facts().writes()
            }

            fn execute(self, db: &Path, out: &mut dyn Write) -> Result<Exit> {
                match self {
                    $( Command::$variant(a) => {
                        let run: fn(&Path, $args, &mut dyn Write) -> Result<Exit> = $exec;
                        run(db, a, out)
                    } )*
                }
            }
        }

        /// The command names (and `help`), for suggestions.
        const SUBCOMMANDS: &[&str] = &[$( $name, )* "help"];
    };
}

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

// Every command once: its doc and clap attributes, its arguments, its name, and what runs it. The enum,
// its name, its `--db` and `--threads`, the dispatch and the list of names are all derived from this.
commands! {

    /// Train every run of a spec that is not already done (the same as `runner <SPEC>`).
    #[command(after_help = "Example:\n  runner run experiments/smoke.toml --db /tmp/smoke.db")]
    Run(train::RunArgs) = "run" => |db, a, out| match &a.spec {
            Some(spec) => train::run(spec, db, &a, out),
            None => bail!(mlp_runner::Error::Usage(
                "`runner run` needs a spec, e.g. runner run experiments/smoke.toml".into(),
            )),
        },

    /// Print the runs a spec expands to, with their config hashes and whether they are done; trains nothing.
    #[command(after_help = "Example:\n  runner plan experiments/lr_sweep.toml")]
    Plan(train::PlanArgs) = "plan" => |db, a, out| train::plan(&a, db, out),

    /// Re-train stored runs from their stored configs and compare every epoch and the weights bit for
    /// bit (after checking their stored bits against their hashes).
    #[command(
        after_help = "Examples:\n  runner verify 7\n  runner verify lr_sweep/learning_rate=0.1,seed=1\n  \
                      runner verify --experiment lr_sweep\n  runner verify --all"
    )]
    Verify(verify::VerifyArgs) = "verify" => |db, a, out| verify::verify(db, a, out),

    /// Check every stored bit against its hash, without training: weights, epoch rows and configs of
    /// every run (or the runs given), and SQLite's own integrity check. Exit 3 if anything is corrupt.
    #[command(after_help = "Examples:\n  runner check\n  runner check 5 6 --db shard-0.db")]
    Check(verify::CheckArgs) = "check" => |db, a, out| verify::check(db, a, out),

    /// Run a read-only SQL query on the results database and print the rows as they come.
    #[command(
        after_help = "Examples:\n  runner sql 'SELECT * FROM run_summary ORDER BY test_acc DESC'\n  \
                            runner sql --csv 'SELECT run_id, epoch, test_acc FROM epochs'\n  \
                            runner sql --timeout 10 'SELECT count(*) FROM weights'"
    )]
    Sql(inspect::SqlArgs) = "sql" => |db, a, out| inspect::sql(db, a, out),

    /// Compare an experiment's configurations: the parameters that vary, test accuracy over seeds (mean
    /// with its 95% interval, spread, min, max), diverged runs, time; the best mean marked. With
    /// --baseline, each configuration against one: the difference, its 95% interval, p-value and verdict.
    /// Default: the newest experiment.
    #[command(
        after_help = "Examples:\n  runner compare\n  runner compare lr_sweep --csv\n  \
                      runner compare lr_sweep --baseline learning_rate=0.1\n  runner compare --baseline 5"
    )]
    Compare(report::CompareArgs) = "compare" => |db, a, out| report::compare(db, a, out),

    /// Write a run's weights as a safetensors file (architecture and provenance in its metadata), loadable
    /// by the Python `safetensors` package and PyTorch without this tool.
    #[command(after_help = "Examples:\n  runner export 5 -o model.safetensors\n  \
                            runner export 5 --weights initial -o init.safetensors\n\n\
                            In Python: from safetensors.numpy import load_file; w = load_file('model.safetensors')\n\
                            Tensors: layer1.weight [out, in] (as torch.nn.Linear), layer1.bias [out], layer2....")]
    Export(report::ExportArgs) = "export" => |db, a, out| report::export(db, a, out),

    /// Classify digit images with a stored run: any size and either polarity, brought to MNIST's 28 x 28
    /// form (cropped, scaled to 20 x 20, centred by mass) first.
    #[command(
        after_help = "Examples:\n  runner predict 5 digit.png\n  runner predict 5 --top 3 *.png --json"
    )]
    Predict(report::PredictArgs) = "predict" => |db, a, out| report::predict(db, a, out),

    /// Plot learning curves (loss and accuracy per epoch, train and test) of runs or of an experiment, or
    /// with --lr the final test accuracy against learning rate (log axis, a point per seed, the mean line).
    /// PNG or SVG, by the output's extension.
    #[command(
        after_help = "Examples:\n  runner plot --experiment lr_sweep -o curves.png\n  \
                            runner plot 5 6 -o curves.svg\n  runner plot --lr --experiment lr_sweep -o lr.png"
    )]
    Plot(report::PlotArgs) = "plot" => |db, a, out| report::plot(db, a, out),

    /// List stored runs (deleted ones only with --deleted or --all), filtered and sorted.
    #[command(
        after_help = "Examples:\n  runner ls --experiment lr_sweep\n  runner ls --tag baseline\n  \
                      runner ls --where 'test_acc > 0.97 AND learning_rate < 0.5' --sort -test_acc --limit 10\n  \
                      runner ls --deleted"
    )]
    Ls(inspect::LsArgs) = "ls" => |db, a, out| inspect::ls(db, a, out),

    /// Show one run: parameters, provenance, hashes, tags and note, epochs and stored weights.
    #[command(
        after_help = "Examples:\n  runner show 7\n  runner show lr_sweep/learning_rate=0.1,seed=1\n  \
                            runner show 7 --json\n  runner show 7 --csv"
    )]
    Show(inspect::ShowArgs) = "show" => |db, a, out| inspect::show(db, a, out),

    /// Resume an interrupted run from its last stored epoch (or train a pending or failed one), from its
    /// stored config; `runner <spec>` does the same for every unfinished run of a spec.
    #[command(after_help = "Example:\n  runner resume 7")]
    Resume(train::ResumeArgs) = "resume" => |db, a, out| train::resume(db, a, out),

    /// Merge result stores (e.g. one per shard) into one; a run stored twice must match bit for bit.
    #[command(
        after_help = "Example:\n  runner merge shard-0.db shard-1.db shard-2.db -o results/all.db"
    )]
    Merge(merge::MergeArgs) = "merge" => |_db, a, out| merge::merge(a, out),

    /// Time training, evaluation and loading on this machine, and the efficiency against its own GEMM.
    #[command(
        after_help = "Examples:\n  runner bench\n  runner bench --batch 128 --dtype f32 --reps 5\n  \
                            runner bench --samples 10000 --reps 1   (a quick look)\n  \
                            runner bench --ui   (the dashboard on 10 000 synthetic runs)\n  \
                            runner bench --kernels   (each matrix product alone, best of 30 runs)"
    )]
    Bench(bench::BenchArgs) = "bench" => |_db, a, out| bench::bench(a, out),

    /// Add tags to runs (or take them away with --remove); `ls --tag` finds them.
    #[command(
        override_usage = "runner tag [OPTIONS] <RUN>... <TAG>...",
        after_help = "Examples:\n  runner tag 7 8 baseline paper\n  runner tag lr_sweep/learning_rate=0.1,seed=1 best\n  \
                      runner tag 7 --remove paper"
    )]
    Tag(manage::TagArgs) = "tag" => |db, a, out| manage::tag(db, a, out),

    /// Set a run's note (an empty text clears it); shown by `show` and `ls`.
    #[command(after_help = "Example:\n  runner note 7 'lr 0.1 is the tutorial default'")]
    Note(manage::NoteArgs) = "note" => |db, a, out| manage::note(db, a, out),

    /// Delete runs softly: hidden from ls, compare, plots and the views, not trained again by their spec
    /// (unless --force), until `restore`; `gc` removes them for good. A running run cannot be removed.
    #[command(
        visible_alias = "delete",
        after_help = "Examples:\n  runner rm 9 10\n  runner rm --experiment smoke --status diverged\n  runner restore 9"
    )]
    Rm(manage::RmArgs) = "rm" => |db, a, out| manage::rm(db, a, out),

    /// Undo `rm`.
    #[command(after_help = "Examples:\n  runner restore 9\n  runner restore --experiment smoke")]
    Restore(manage::RestoreArgs) = "restore" => |db, a, out| manage::restore(db, a, out),

    /// Remove deleted runs and their weights for good, then VACUUM the store; prints the bytes freed.
    #[command(after_help = "Example:\n  runner gc --db results/results.db")]
    Gc(manage::GcArgs) = "gc" => |db, a, out| manage::gc(db, a, out),

    /// Two runs side by side: the config and envelope fields that differ, their epochs, and per layer
    /// whether the weights are bit-identical or their largest absolute difference.
    #[command(after_help = "Examples:\n  runner diff 5 6\n  runner diff 5 6 --json")]
    Diff(manage::DiffArgs) = "diff" => |db, a, out| manage::diff(db, a, out),

    /// Serve the store read-only to a browser: experiments, runs (filter, sort, compare), one run, live
    /// while a sweep trains. On 127.0.0.1 unless --host says otherwise.
    #[command(
        after_help = "Examples:\n  runner ui\n  runner ui --db results/results.db --port 8080"
    )]
    Ui(ui::UiArgs) = "ui" => |db, a, out| ui::serve(db, a, out),

    /// Write the dashboard's views of experiments as one self-contained HTML file (a CI artifact, an
    /// email attachment): data, scripts and styles inline, nothing fetched when it opens.
    #[command(
        after_help = "Examples:\n  runner report -o report.html\n  runner report lr_sweep -o lr_sweep.html"
    )]
    Report(ui::ReportArgs) = "report" => |db, a, out| ui::report(db, a, out),

    /// Data tools: export the PNG layout, describe a data folder.
    #[command(
        subcommand,
        after_help = "Examples:\n  runner data info data/mnist\n  runner data export-png data/mnist /tmp/mnist-png"
    )]
    Data(data::DataCommand) = "data" => |_db, a, out| data::data(a, out),
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
        Some(cmd) => cmd.execute(db, out),
    }
}

/// Does this command change the store without training (tags, notes, deletes)?
fn writes(cli: &Cli) -> bool {
    cli.command.as_ref().is_some_and(Command::writes)
}

/// Does this command train (and so write log lines from worker threads to standard output)?
pub fn trains(cli: &Cli) -> bool {
    cli.command.as_ref().is_none_or(Command::trains)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The names `commands!` declares are the names clap derives for the same variants: suggestions and
    /// messages name real commands.
    #[test]
    fn declared_names_are_clap_names() {
        let clap_names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let declared: Vec<&str> = SUBCOMMANDS
            .iter()
            .copied()
            .filter(|n| *n != "help")
            .collect();
        assert_eq!(clap_names, declared);
    }
}
