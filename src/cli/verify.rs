//! `verify` (re-train stored runs and compare them bit for bit) and `check` (every stored bit against its
//! hash, without training).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Result;
use clap::Args;
use mlp_runner::core::data::DataCache;
use mlp_runner::report::table::Format;
use mlp_runner::store::{RunStatus, Store, Table, integrity};
use mlp_runner::sweep::Progress;
use mlp_runner::sweep::verify::{DataLocation, verify_run};
use mlp_runner::text::clean;
use mlp_runner::{Error, ErrorKind};
use rusqlite::types::Value;

use super::args::{CommandFacts, DbArg, Exit, FormatArgs, ThreadsArg, print_table};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Runs to verify: ids, names or unique name prefixes.
    #[arg(allow_negative_numbers = true, required_unless_present_any = ["all", "experiment"])]
    pub runs: Vec<String>,
    /// Verify every completed or diverged run.
    #[arg(long, conflicts_with = "runs")]
    pub all: bool,
    /// Verify the completed or diverged runs of this experiment.
    #[arg(long, conflicts_with = "runs", value_name = "NAME")]
    pub experiment: Option<String>,
    /// Read the runs' data from this folder (default: each run's configured folder from here, else the
    /// absolute path it was trained at); its hash must be the stored one.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Runs to check: ids, names or unique name prefixes (default: every run, deleted ones too).
    #[arg(allow_negative_numbers = true)]
    pub runs: Vec<String>,
    #[command(flatten)]
    pub db: DbArg,
}

pub fn verify(db: &Path, args: VerifyArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let ids = if args.all || args.experiment.is_some() {
        let ids = store.live_run_ids(args.experiment.as_deref(), &RunStatus::FINISHED)?;
        if ids.is_empty() {
            return Err(Error::Usage(match args.experiment {
                Some(e) => format!(
                    "no completed or diverged runs of experiment `{}` in {}",
                    clean(&e),
                    db.display()
                ),
                None => format!("no completed or diverged runs in {}", db.display()),
            })
            .into());
        }
        ids
    } else {
        resolve_all(&store, &args.runs)?
    };
    let mut cache = DataCache::default();
    let (mut mismatches, mut corrupt) = (0, 0);
    // SQLite's own check of the file first: pages it calls malformed make every answer below suspect.
    let structure = store.quick_check()?;
    for problem in &structure {
        writeln!(out, "SQLite: {}", clean(problem))?;
    }
    // CSV and JSON: one row per run, printed at the end; text: lines as each run is verified.
    let format = args.format.format();
    let text = format == Format::Text;
    let mut table = Table::new(&[
        "run_id",
        "name",
        "result",
        "difference",
        "corrupt",
        "weights_sha256",
        "result_sha256",
        "envelope_differs",
    ]);
    let at = DataLocation {
        dir: args.data_dir.as_deref(),
    };
    // A bar per run on a terminal; the epoch lines with the text output only.
    let bars = super::progress::Bars::new(std::io::stderr().is_terminal());
    let progress = Shown {
        bars: &bars,
        lines: text,
    };
    for id in ids {
        let verified = verify_run(&store, &mut cache, id, &at, &progress);
        bars.finish();
        let r = match verified {
            Ok(r) => r,
            // A run whose config cannot be read is reported and the others are still verified.
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                corrupt += 1;
                if text {
                    writeln!(out, "run {id}: CORRUPT: {e}")?;
                }
                table.rows.push(vec![
                    Value::Integer(id),
                    Value::Null,
                    Value::Text("corrupt".into()),
                    Value::Null,
                    Value::Text(e.to_string()),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ]);
                continue;
            }
            // Every other error names the run it stopped at.
            Err(e) => {
                let named = e.to_string().starts_with(&format!("run {id} "));
                return Err(if named {
                    e.into()
                } else {
                    anyhow::Error::from(e).context(format!("verifying run {id}"))
                });
            }
        };
        let name = clean(&r.name);
        if !r.corrupt.is_empty() {
            corrupt += 1;
        }
        if r.difference.is_some() {
            mismatches += 1;
        }
        let envelope: Vec<String> = r
            .envelope_diffs
            .iter()
            .map(|(field, stored, now)| format!("{field}: stored {stored}, now {now}"))
            .collect();
        let result = match (&r.difference, r.corrupt.is_empty()) {
            (Some(_), _) => "mismatch",
            (None, false) => "corrupt",
            (None, true) => "identical",
        };
        table.rows.push(vec![
            Value::Integer(id),
            Value::Text(r.name.clone()),
            Value::Text(result.into()),
            r.difference.clone().map_or(Value::Null, Value::Text),
            if r.corrupt.is_empty() {
                Value::Null
            } else {
                Value::Text(r.corrupt.join("; "))
            },
            Value::Text(r.weights_sha256.clone()),
            r.result_sha256.clone().map_or(Value::Null, Value::Text),
            Value::Text(envelope.join("; ")),
        ]);
        if !text {
            continue;
        }
        for finding in &r.corrupt {
            writeln!(out, "run {id} {name}: CORRUPT: {}", clean(finding))?;
        }
        match &r.difference {
            None if !r.corrupt.is_empty() => writeln!(
                out,
                "run {id} {name}: the re-run matches the stored hashes (weights sha256 {}) but not the stored \
                 bits above: restore the store from a copy, or train the run again with --force",
                r.weights_sha256
            )?,
            None => writeln!(
                out,
                "run {id} {name}: identical (weights sha256 {}, result {})",
                r.weights_sha256,
                r.result_sha256.as_deref().unwrap_or("?")
            )?,
            Some(d) => writeln!(out, "run {id} {name}: MISMATCH: {d}")?,
        }
        if let Some(note) = &r.note {
            writeln!(out, "  note: {note}")?;
        }
        for (field, stored, now) in &r.envelope_diffs {
            writeln!(
                out,
                "  envelope differs: {field}: stored {}, now {}",
                clean(stored),
                clean(now)
            )?;
        }
    }
    if !text {
        print_table(&table, format, out)?;
    }
    if corrupt > 0 || !structure.is_empty() {
        return Err(Error::Corrupt {
            path: db.to_path_buf(),
            msg: if corrupt > 0 {
                format!(
                    "{corrupt} {} stored bits that do not match their hashes (see above); `runner check` \
                     lists every problem",
                    if corrupt == 1 { "run holds" } else { "runs hold" }
                )
            } else {
                "SQLite's structural check of the file fails (see above): restore the store from a copy; \
                 `runner check` lists every problem"
                    .to_string()
            },
        }
        .into());
    }
    Ok(if mismatches > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

pub fn check(db: &Path, args: CheckArgs, out: &mut dyn Write) -> Result<Exit> {
    let started = std::time::Instant::now();
    let store = Store::open_read_only(db)?;
    let sqlite = store.quick_check()?;
    for problem in &sqlite {
        writeln!(out, "SQLite: {}", clean(problem))?;
    }
    let ids = if args.runs.is_empty() {
        store.run_ids(None, &[])?
    } else {
        resolve_all(&store, &args.runs)?
    };
    let (mut tensors, mut bytes, mut bad) = (0, 0, 0);
    for &id in &ids {
        let c = integrity::check_run(&store, id)?;
        tensors += c.tensors;
        bytes += c.bytes;
        if !c.findings.is_empty() {
            bad += 1;
            for f in &c.findings {
                writeln!(
                    out,
                    "run {id} {} ({}): {}",
                    clean(&c.name),
                    c.status,
                    clean(&f.0)
                )?;
            }
        }
    }
    writeln!(
        out,
        "checked {} runs of {}: {tensors} weight tensors ({:.1} MB), their epoch rows and configs, in {:.2} s: {}",
        ids.len(),
        db.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        if bad == 0 && sqlite.is_empty() {
            "every stored hash matches".to_string()
        } else {
            format!("{bad} {} corrupt", if bad == 1 { "run" } else { "runs" })
        }
    )?;
    if bad > 0 || !sqlite.is_empty() {
        return Err(Error::Corrupt {
            path: db.to_path_buf(),
            msg: format!(
                "{bad} of {} runs hold bits that do not match their hashes{}",
                ids.len(),
                if sqlite.is_empty() {
                    ""
                } else {
                    ", and SQLite's integrity check fails"
                }
            ),
        }
        .into());
    }
    Ok(Exit::Ok)
}

/// Verify's progress: bars on a terminal, and the epoch lines only where the output is text.
struct Shown<'a> {
    bars: &'a super::progress::Bars,
    lines: bool,
}

impl Progress for Shown<'_> {
    fn log(&self, line: &str) {
        if self.lines || self.bars.drawing() {
            self.bars.log(line);
        }
    }

    fn run_started(
        &self,
        run: &mlp_runner::sweep::RunStart<'_>,
    ) -> Box<dyn mlp_runner::sweep::RunProgress> {
        self.bars.run_started(run)
    }
}

/// Run ids from the words a user gave (ids, names, unique name prefixes).
fn resolve_all(store: &Store, words: &[String]) -> Result<Vec<i64>> {
    words
        .iter()
        .map(|w| Ok(store.resolve(w, mlp_runner::store::manage::Deleted::Avoid)?))
        .collect()
}

impl CommandFacts for VerifyArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn threads(&self) -> Option<ThreadsArg> {
        Some(self.threads)
    }
}

impl CommandFacts for CheckArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}
