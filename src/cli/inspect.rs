//! `ls`, `show` and `sql`: reading the store.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use mlp_runner::report::table::{self, Format, TableWriter};
use mlp_runner::store::Store;
use mlp_runner::store::read::{QueryEvent, UserQuery};
use mlp_runner::text::clean;

use super::{Exit, FormatArgs, print_table};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only the runs of this experiment.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub run: i64,
    /// Print one JSON object: the run's row, its epochs, and its stored weights' shapes.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    pub query: String,
    /// Stop the query after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub format: FormatArgs,
}

pub fn ls(db: &Path, args: LsArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    if let Some(name) = &args.experiment {
        let known = store.select("SELECT DISTINCT name FROM experiments ORDER BY name", &[])?;
        let names: Vec<String> = known.rows.iter().map(|r| table::cell(&r[0])).collect();
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
    // Text shows epochs as "done/total"; CSV and JSON give the two numbers.
    let epochs = match args.format.format() {
        Format::Text => "epochs_done || '/' || epochs AS epochs",
        _ => "epochs_done, epochs",
    };
    let t = store.select(
        &format!(
            "SELECT run_id, experiment, name, status, {epochs}, test_acc, test_loss, round(seconds, 2) AS seconds
             FROM run_summary WHERE (?1 IS NULL OR experiment = ?1) ORDER BY run_id"
        ),
        &[&args.experiment],
    )?;
    print_table(&t, args.format.format(), out)?;
    Ok(Exit::Ok)
}

pub fn show(db: &Path, args: ShowArgs, out: &mut dyn Write) -> Result<Exit> {
    let run = args.run;
    let store = Store::open_read_only(db)?;
    let row = store.run(run)?;
    let t = store.select("SELECT * FROM runs WHERE id = ?1", &[&run])?;
    let epochs = store.select(
        "SELECT epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds
         FROM epochs WHERE run_id = ?1 ORDER BY epoch",
        &[&run],
    )?;
    let weights = store.select(
        "SELECT kind, epoch, layer, param, shape, dtype, length(data) AS bytes FROM weights
         WHERE run_id = ?1 ORDER BY kind = 'final', layer, param = 'bias'",
        &[&run],
    )?;
    if args.json {
        let run_json = table::json_rows(&t)
            .get(0)
            .cloned()
            .ok_or_else(|| mlp_runner::Error::internal(format!("run {run} has no row")))?;
        let value = serde_json::json!({
            "run": run_json,
            "epochs": table::json_rows(&epochs),
            "weights": table::json_rows(&weights),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
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
            let text = table::cell(v);
            writeln!(
                out,
                "  {c:<width$}  {}",
                clean(&mlp_runner::text::truncate(&text, 500))
            )?;
        }
    }
    writeln!(out, "\nresolved config:")?;
    for line in row.config_toml.lines() {
        writeln!(out, "  {}", clean(line))?;
    }
    writeln!(out, "\nepochs:")?;
    print_table(&epochs, Format::Text, out)?;
    writeln!(out, "\nweights:")?;
    print_table(&weights, Format::Text, out)?;
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
                    self.writer =
                        Some(TableWriter::new(out, self.format, columns).map_err(out_err)?);
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
