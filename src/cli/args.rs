//! The argument types and outcomes every command shares: `--db`, `--threads`, `--csv`/`--json`, the exit a
//! command ends with, printing a table, and [`CommandFacts`], what each command's argument type says about
//! it (the store it names, whether it trains or writes). A leaf of `cli`: it imports no other command
//! module.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use mlp_runner::report::table::{self, Format};
use mlp_runner::store::{RunStatus, Table};

/// What a command's argument type says about the command, for the checks made before it runs.
pub trait CommandFacts {
    /// Its `--db`, if it reads or writes a store.
    fn db(&self) -> Option<&DbArg> {
        None
    }
    /// Its `--threads`, if it trains.
    fn threads(&self) -> Option<ThreadsArg> {
        None
    }
    /// Does it train (log lines from worker threads to standard output)?
    fn trains(&self) -> bool {
        false
    }
    /// Does it change the store without training (tags, notes, deletes)?
    fn writes(&self) -> bool {
        false
    }
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
    pub fn format(self) -> Format {
        if self.csv {
            Format::Csv
        } else if self.json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// The default store, whose folder is created when missing.
pub const DEFAULT_DB: &str = "results/results.db";

/// What `main` should exit with after a command that did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A verify mismatch, a run that failed, a merge that is missing runs.
    Failure,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

/// Print a table in the chosen format.
pub fn print_table(t: &Table, format: Format, out: &mut dyn Write) -> Result<()> {
    use std::io::IsTerminal;
    table::write_on(t, format, out, std::io::stdout().is_terminal())?;
    Ok(())
}

pub fn parse_status(s: &str) -> std::result::Result<RunStatus, String> {
    RunStatus::parse(s).ok_or_else(|| {
        format!(
            "expected one of {}",
            RunStatus::ALL.map(RunStatus::as_str).join(", ")
        )
    })
}

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
