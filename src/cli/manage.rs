//! Run management: `tag`, `note`, `rm`, `restore`, `gc` and `diff`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::Args;
use mlp_runner::Error;
use mlp_runner::report::diff;
use mlp_runner::report::table::{self, Format};
use mlp_runner::store::manage::Deleted;
use mlp_runner::store::{RunStatus, Store};
use mlp_runner::text::clean;

use super::args::{CommandFacts, DbArg, Exit, parse_status, print_table};

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Runs, then tags: the leading words that name runs (an id, a word with `/`, or a run's exact name)
    /// are the runs; the words after them are the tags.
    #[arg(required = true, value_name = "RUN... TAG")]
    pub words: Vec<String>,
    /// Take the tags away instead.
    #[arg(long)]
    pub remove: bool,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct NoteArgs {
    /// The run: its id, its name, or a prefix of exactly one run's name.
    #[arg(allow_negative_numbers = true)]
    pub run: String,
    /// The note (quote it); an empty text clears the note.
    pub text: String,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Runs to delete: ids, names or unique name prefixes.
    #[arg(
        allow_negative_numbers = true,
        required_unless_present = "experiment",
        conflicts_with = "experiment"
    )]
    pub runs: Vec<String>,
    /// Delete the runs of this experiment (with --status, only those in that status).
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    #[arg(long, value_name = "STATUS", value_parser = parse_status, requires = "experiment")]
    pub status: Option<RunStatus>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Deleted runs to restore: ids, names or unique name prefixes.
    #[arg(
        allow_negative_numbers = true,
        required_unless_present = "experiment",
        conflicts_with = "experiment"
    )]
    pub runs: Vec<String>,
    /// Restore every deleted run of this experiment.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first run: an id, a name or a unique name prefix.
    #[arg(allow_negative_numbers = true)]
    pub a: String,
    /// The second run.
    #[arg(allow_negative_numbers = true)]
    pub b: String,
    /// Print one JSON object with the four tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArg,
}

/// `tag`: the leading words that name runs are runs (an id, a word with `/`, which tags never have, or a
/// run's exact name); the words after them are tags. At least one of each.
pub fn tag(db: &Path, args: TagArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open(db)?;
    let is_run = |w: &str| -> Result<bool> {
        Ok(w.chars().all(|c| c.is_ascii_digit()) || w.contains('/') || store.has_run_named(w)?)
    };
    let mut runs = Vec::new();
    let mut at = 0;
    while at < args.words.len() && is_run(&args.words[at])? {
        runs.push(store.resolve(&args.words[at], Deleted::Avoid)?);
        at += 1;
    }
    let tags: Vec<String> = args.words[at..].to_vec();
    if runs.is_empty() {
        // The first word must be a run; resolving it says why it is not.
        store.resolve(&args.words[0], Deleted::Avoid)?;
    }
    if tags.is_empty() {
        return Err(Error::Usage(format!(
            "no tag given: `runner tag RUN... TAG...`, e.g. runner tag {} baseline",
            runs.first().copied().unwrap_or(1)
        ))
        .into());
    }
    let changed = store.tag(&runs, &tags, args.remove)?;
    let ids: Vec<String> = runs.iter().map(i64::to_string).collect();
    writeln!(
        out,
        "{} {} {} run{} {} ({changed} changed)",
        if args.remove { "removed" } else { "tagged" },
        clean(&tags.join(", ")),
        if args.remove { "from" } else { "on" },
        if runs.len() == 1 { "" } else { "s" },
        ids.join(", ")
    )?;
    Ok(Exit::Ok)
}

pub fn note(db: &Path, args: NoteArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open(db)?;
    let id = store.resolve(&args.run, Deleted::Avoid)?;
    store.set_note(id, &args.text)?;
    if args.text.trim().is_empty() {
        writeln!(out, "cleared the note of run {id}")?;
    } else {
        writeln!(out, "noted on run {id}")?;
    }
    Ok(Exit::Ok)
}

/// The runs an `rm` or `restore` names: given ones, or those of an experiment (and status).
fn targets(
    store: &Store,
    runs: &[String],
    experiment: Option<&str>,
    status: Option<RunStatus>,
    deleted: Deleted,
) -> Result<Vec<i64>> {
    if let Some(name) = experiment {
        let t = store.experiment_runs(name, status, deleted == Deleted::Only)?;
        let ids: Vec<i64> = t
            .rows
            .iter()
            .filter_map(|r| match r[0] {
                rusqlite::types::Value::Integer(i) => Some(i),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Err(Error::Usage(format!(
                "no {}runs of experiment `{}`{} in {}; `runner ls{}` lists them",
                if deleted == Deleted::Only {
                    "deleted "
                } else {
                    ""
                },
                clean(name),
                status.map_or(String::new(), |s| format!(" in status {s}")),
                store.path().display(),
                if deleted == Deleted::Only {
                    " --deleted"
                } else {
                    ""
                }
            ))
            .into());
        }
        return Ok(ids);
    }
    runs.iter()
        .map(|r| Ok(store.resolve(r, deleted)?))
        .collect()
}

pub fn rm(db: &Path, args: RmArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open(db)?;
    let ids = targets(
        &store,
        &args.runs,
        args.experiment.as_deref(),
        args.status,
        Deleted::Avoid,
    )?;
    let n = store.soft_delete(&ids)?;
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    writeln!(
        out,
        "deleted {n} run{} ({}); hidden from ls, compare and plots, not trained again by its spec without \
         --force; `runner restore {}` undoes it, `runner gc` removes deleted runs for good",
        if n == 1 { "" } else { "s" },
        list.join(", "),
        list.join(" ")
    )?;
    Ok(Exit::Ok)
}

pub fn restore(db: &Path, args: RestoreArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open(db)?;
    let ids = targets(
        &store,
        &args.runs,
        args.experiment.as_deref(),
        None,
        Deleted::Only,
    )?;
    let n = store.restore(&ids)?;
    writeln!(out, "restored {n} run{}", if n == 1 { "" } else { "s" })?;
    Ok(Exit::Ok)
}

pub fn gc(db: &Path, _args: GcArgs, out: &mut dyn Write) -> Result<Exit> {
    if !db.exists() {
        return Err(Error::Usage(format!("{} does not exist", db.display())).into());
    }
    let store = Store::open(db)?;
    let c = store.gc()?;
    writeln!(
        out,
        "removed {} deleted run{} ({:.1} MB of weights); {} went from {} to {} bytes ({} freed)",
        c.runs,
        if c.runs == 1 { "" } else { "s" },
        c.weight_bytes as f64 / 1e6,
        db.display(),
        c.bytes_before,
        c.bytes_after,
        c.bytes_before.saturating_sub(c.bytes_after)
    )?;
    Ok(Exit::Ok)
}

pub fn diff(db: &Path, args: DiffArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let a = store.resolve(&args.a, Deleted::Avoid)?;
    let b = store.resolve(&args.b, Deleted::Avoid)?;
    let d = diff::diff(&store, a, b)?;
    if args.json {
        let value = serde_json::json!({
            "a": a,
            "b": b,
            "config": table::json_rows(&d.config),
            "envelope": table::json_rows(&d.envelope),
            "epochs": table::json_rows(&d.epochs),
            "weights": table::json_rows(&d.weights),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(Exit::Ok);
    }
    let (ra, rb) = (store.run(a)?, store.run(b)?);
    writeln!(out, "a: run {a} {}", clean(&ra.name))?;
    writeln!(out, "b: run {b} {}", clean(&rb.name))?;
    for (title, t, empty) in [
        (
            "config fields that differ",
            &d.config,
            "none: the same config",
        ),
        (
            "envelope fields that differ",
            &d.envelope,
            "none: trained by the same build on the same kind of machine",
        ),
        ("epochs", &d.epochs, "none stored"),
        ("weights", &d.weights, "none stored"),
    ] {
        writeln!(out, "\n{title}:")?;
        if t.rows.is_empty() {
            writeln!(out, "  {empty}")?;
        } else {
            print_table(t, Format::Text, out)?;
        }
    }
    Ok(Exit::Ok)
}

impl CommandFacts for TagArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn writes(&self) -> bool {
        true
    }
}

impl CommandFacts for NoteArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn writes(&self) -> bool {
        true
    }
}

impl CommandFacts for RmArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn writes(&self) -> bool {
        true
    }
}

impl CommandFacts for RestoreArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn writes(&self) -> bool {
        true
    }
}

impl CommandFacts for GcArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
    fn writes(&self) -> bool {
        true
    }
}

impl CommandFacts for DiffArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}
