//! `ls`, `show` and `sql`: reading the store.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use mlp_runner::report::table::{self, Format, TableWriter};
use mlp_runner::store::listing::{Hidden, Listing};
use mlp_runner::store::manage::Deleted;
use mlp_runner::store::read::{QueryEvent, UserQuery};
use mlp_runner::store::{RunStatus, Store};
use mlp_runner::text::clean;
use rusqlite::types::Value;

use super::args::{CommandFacts, DbArg, Exit, FormatArgs, parse_status, print_table};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only the runs of this experiment.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    /// Only runs with this tag (`runner tag`).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Only runs in this status: pending, running, completed, diverged, failed, interrupted, or for a
    /// search's runs paused (at a rung, waiting for its decision) and pruned.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<RunStatus>,
    /// An SQL condition on the columns of the `run_summary` view, e.g. "test_acc > 0.97 AND learning_rate < 0.5"
    /// (run read-only).
    #[arg(long = "where", value_name = "SQL")]
    pub condition: Option<String>,
    /// Sort by these run_summary columns, comma-separated; `-` in front sorts descending (-test_acc).
    /// Default: run_id.
    #[arg(long, value_name = "[-]COLUMN,...", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Print at most this many runs.
    #[arg(allow_negative_numbers = true, long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop a --where condition that runs longer than this many seconds.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    pub timeout: f64,
    /// Only the deleted runs (`runner rm`).
    #[arg(long, conflicts_with = "all")]
    pub deleted: bool,
    /// Deleted runs and superseded attempts (an earlier run of a config trained again with --force) too.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run: its id, its name, or a prefix of exactly one run's name.
    #[arg(allow_negative_numbers = true)]
    pub run: String,
    /// Print one JSON object: the run's row, its tags, its epochs, and its stored weights' shapes.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the run's row as CSV (a header line and one row; its epochs: `runner sql --csv`).
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (read-only), e.g. 'SELECT * FROM run_summary'.
    pub query: String,
    /// Stop the query after this many seconds.
    #[arg(allow_negative_numbers = true, long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub db: DbArg,
}

pub fn ls(db: &Path, args: LsArgs, out: &mut dyn Write) -> Result<Exit> {
    let mut store = Store::open_read_only(db)?;
    if let Some(name) = &args.experiment {
        let names = store.experiment_names()?;
        if !names.contains(name) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = mlp_runner::text::nearest(name, &refs)
                .map(|n| format!("did you mean `{}`? ", clean(n)))
                .unwrap_or_default();
            return Err(mlp_runner::Error::Usage(format!(
                "no experiment `{}` in {}; {hint}experiments: {}",
                clean(&mlp_runner::text::truncate(name, 100)),
                db.display(),
                if names.is_empty() {
                    "none".into()
                } else {
                    clean(&names.join(", ")).into_owned()
                }
            ))
            .into());
        }
    }
    let columns = store.listing_columns()?;
    let listed = || columns.join(", ");
    // --sort: known columns only (they are interpolated), each ascending or (-) descending.
    let mut order = Vec::new();
    for key in args.sort.as_deref().unwrap_or("run_id").split(',') {
        let key = key.trim();
        let (col, dir) = match key.strip_prefix('-') {
            Some(c) => (c.trim(), "DESC"),
            None => (key.strip_prefix('+').unwrap_or(key), "ASC"),
        };
        if !columns.iter().any(|c| c == col) {
            let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
            let hint = mlp_runner::text::nearest(col, &refs)
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            return Err(mlp_runner::Error::Usage(format!(
                "--sort: no column `{}`; {hint}the columns are: {}",
                clean(&mlp_runner::text::truncate(col, 60)),
                listed()
            ))
            .into());
        }
        order.push((col.to_string(), dir == "DESC"));
    }
    let time_limit = Duration::from_secs_f64(args.timeout.clamp(0.001, 86_400.0));
    let listing = Listing {
        experiment: args.experiment.as_deref(),
        status: args.status,
        tag: args.tag.as_deref(),
        condition: args.condition.as_deref(),
        order: &order,
        limit: args.limit,
        hidden: if args.deleted {
            Hidden::Only
        } else if args.all {
            Hidden::Too
        } else {
            Hidden::Not
        },
        epochs_as_text: args.format.format() == Format::Text,
        time_limit,
    };
    let mut t = store
        .list_runs(&listing)
        .map_err(|e| match (&args.condition, e) {
            (Some(c), mlp_runner::Error::Usage(msg)) => {
                // "no such column: tset_acc": name the column meant.
                let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
                let hint = msg
                    .rsplit_once("no such column: ")
                    .and_then(|(_, col)| mlp_runner::text::nearest(col.trim(), &refs))
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                mlp_runner::Error::Usage(format!(
                    "--where {}: {msg}{hint}; the clause is an SQL condition on these columns of run_summary: {}",
                    clean(&mlp_runner::text::truncate(c, 200)),
                    listed()
                ))
            }
            (_, e) => e,
        })?;
    if args.format.format() == Format::Text {
        // Long notes are cut in the listing; `show` prints them whole.
        if let Some(i) = t.columns.iter().position(|c| c == "note") {
            for row in &mut t.rows {
                if let Value::Text(n) = &row[i] {
                    row[i] = Value::Text(mlp_runner::text::truncate(n, 40).into_owned());
                }
            }
        }
    }
    print_table(&t, args.format.format(), out)?;
    Ok(Exit::Ok)
}

/// A `runs` cell as `show` prints it: times as ISO dates, flags as true/false.
fn shown(column: &str, v: &Value) -> Value {
    match (column, v) {
        ("heartbeat_at", Value::Real(secs)) => Value::Text(mlp_runner::text::iso_time(*secs)),
        ("drop_last" | "git_dirty" | "initial_stored", Value::Integer(b)) => {
            Value::Text(if *b != 0 { "true" } else { "false" }.into())
        }
        _ => v.clone(),
    }
}

pub fn show(db: &Path, args: ShowArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let run = store.resolve(&args.run, Deleted::Avoid)?;
    let row = store.run(run)?;
    let mut t = store.run_columns(run)?;
    let tags = store.tags(run)?;
    t.columns.push("tags".into());
    if let Some(r) = t.rows.first_mut() {
        r.push(Value::Text(tags.join(",")));
    }
    let epochs = store.epoch_table(run)?;
    let weights = store.weight_table(run)?;
    let errors = mlp_runner::report::errors::of_run(&store, run)?;
    if args.json {
        let mut run_json = table::json_rows(&t)
            .get(0)
            .cloned()
            .ok_or_else(|| mlp_runner::Error::internal(format!("run {run} has no row")))?;
        run_json["tags"] = serde_json::json!(tags);
        let value = serde_json::json!({
            "run": run_json,
            "epochs": table::json_rows(&epochs),
            "weights": table::json_rows(&weights),
            "errors": mlp_runner::report::errors::errors_json(errors.as_ref()),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(Exit::Ok);
    }
    if args.csv {
        print_table(&t, Format::Csv, out)?;
        return Ok(Exit::Ok);
    }
    writeln!(
        out,
        "run {run}: {} (experiment {} #{})",
        clean(&row.name),
        clean(&row.experiment),
        row.experiment_id
    )?;
    let width = t.columns.iter().map(|c| c.len()).max().unwrap_or(0);
    if let Some(values) = t.rows.first() {
        for (c, v) in t.columns.iter().zip(values) {
            if c == "config_toml" || c == "name" || c == "id" {
                continue;
            }
            let text = table::cell(&shown(c, v));
            let limit = if c == "note" { 10_000 } else { 500 };
            writeln!(
                out,
                "  {c:<width$}  {}",
                clean(&mlp_runner::text::truncate(&text, limit))
            )?;
        }
    }
    writeln!(out, "\nresolved config:")?;
    for line in row.config_toml.lines() {
        writeln!(out, "  {}", clean(line))?;
    }
    writeln!(out, "\nepochs:")?;
    print_table(&epochs, Format::Text, out)?;
    match &errors {
        Some(e) => {
            for (split, c) in [
                ("test", Some(&e.test)),
                ("validation", e.validation.as_ref()),
            ] {
                if let Some(c) = c {
                    write!(
                        out,
                        "\n{}",
                        mlp_runner::report::errors::matrix_text(c, split)
                    )?;
                }
            }
            writeln!(
                out,
                "({} misclassified test samples stored: table `misclassified`, run_id {run})",
                e.misclassified.len()
            )?;
        }
        None if row.status == mlp_runner::store::RunStatus::Completed => writeln!(
            out,
            "\n(no confusion matrix: the run completed before the store kept where a model errs)"
        )?,
        None => {}
    }
    writeln!(out, "\nweights:")?;
    print_table(&weights, Format::Text, out)?;
    let initial_kept = weights
        .rows
        .iter()
        .any(|r| matches!(&r[0], Value::Text(k) if k == "initial"));
    if !initial_kept && row.init_weights_sha256.is_some() {
        writeln!(
            out,
            "(initial weights: kept as their hash only, drawn again from the config when needed: \
             runner export {run} --weights initial -o init.safetensors)"
        )?;
    }
    Ok(Exit::Ok)
}

pub fn sql(db: &Path, args: SqlArgs, out: &mut dyn Write) -> Result<Exit> {
    let time_limit = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(mlp_runner::Error::Usage(format!(
                "--timeout must be a number of seconds > 0; got {s}"
            ))
            .into());
        }
        None => None,
    };
    let mut store = Store::open_read_only(db)?;
    let mut sink = Sink {
        out: Some(out),
        format: args.format.format(),
        writer: None,
    };
    store.query_streaming(
        &UserQuery {
            sql: &args.query,
            time_limit,
        },
        &mut |event| sink.take(event),
    )?;
    if let Some(w) = sink.writer {
        w.finish().map_err(out_err)?;
    }
    Ok(Exit::Ok)
}

fn out_err(e: std::io::Error) -> mlp_runner::Error {
    mlp_runner::Error::io("standard output", e)
}

/// Where `sql` streams its rows: a table writer, started when the column names arrive.
struct Sink<'a> {
    out: Option<&'a mut dyn Write>,
    format: Format,
    writer: Option<TableWriter<'a>>,
}

impl Sink<'_> {
    fn take(&mut self, event: QueryEvent<'_>) -> mlp_runner::Result<()> {
        match event {
            QueryEvent::Columns(columns) => {
                if let Some(out) = self.out.take() {
                    use std::io::IsTerminal;
                    let terminal = std::io::stdout().is_terminal();
                    self.writer = Some(
                        TableWriter::on_terminal(out, self.format, columns, terminal)
                            .map_err(out_err)?,
                    );
                }
                Ok(())
            }
            QueryEvent::Row(row) => match self.writer.as_mut() {
                Some(w) => w.row(row).map_err(out_err),
                None => Ok(()),
            },
        }
    }
}

impl CommandFacts for LsArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for ShowArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for SqlArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}
