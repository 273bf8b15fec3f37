//! `bench`: how fast training runs on this machine (see `mlp_runner::core::bench`).

use std::io::Write;

use anyhow::Result;
use clap::Args;
use mlp_runner::Error;
use mlp_runner::core::bench;
use mlp_runner::core::config::{Dtype, RunConfig};
use mlp_runner::report::table::Format;
use mlp_runner::store::Table;
use rusqlite::types::Value;

use super::args::{CommandFacts, Exit, FormatArgs, ThreadsArg, print_table};

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
    #[arg(allow_negative_numbers = true, long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub reps: u16,
    /// Training samples per timed epoch (default: all).
    #[arg(allow_negative_numbers = true, long)]
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
    /// Time the dashboard instead: its API calls over a synthetic store, and the runs page in headless
    /// Chromium (when installed) until it is interactive.
    #[arg(long)]
    pub ui: bool,
    /// Also train this sweep (default: the default sweep) twice, into throw-away stores: with --jobs 2
    /// and with --jobs 1 --threads 2; report the runs per hour of each and the share of each epoch spent
    /// evaluating.
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "experiments/lr_sweep.toml")]
    pub sweep: Option<std::path::PathBuf>,
    /// Time each matrix product of a step and of evaluation alone instead (the first layer of --sizes,
    /// at each --batch and at an evaluation block of 1000 rows): the best of 10 x --reps short runs
    /// against the best FMA peak sampled between them, the figure that repeats on a busy host.
    #[arg(long, conflicts_with_all = ["ui", "sweep", "png"])]
    pub kernels: bool,
    /// Time the optimizers instead: an epoch of SGD with momentum, Nesterov, Adam and AdamW against
    /// plain SGD, back to back, at each --batch and --dtype (as ratios to plain SGD's epoch; default
    /// f32, one thread), with the bytes of state each keeps.
    #[arg(long, conflicts_with_all = ["ui", "sweep", "png", "kernels"])]
    pub optimizers: bool,
    /// Time the threads instead (with --threads N, N >= 2): an epoch on one thread and on N, quiet, then
    /// on N beside a competing load (a thread spinning 20 ms, sleeping 20 ms: half a core in bursts),
    /// back to back per rep: the speed-up, evaluation's speed-up and what the load costs.
    #[arg(long, conflicts_with_all = ["ui", "sweep", "png", "kernels", "optimizers"])]
    pub load: bool,
    /// Runs in the synthetic store of --ui.
    #[arg(long, default_value_t = 10_000, requires = "ui", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ui_runs: u32,
    /// Epochs of each run in the synthetic store of --ui.
    #[arg(long, default_value_t = 20, requires = "ui", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ui_epochs: u32,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

fn parse_dtype(s: &str) -> std::result::Result<Dtype, String> {
    Dtype::parse(s).ok_or_else(|| "expected f32 or f64".into())
}

pub fn bench(args: BenchArgs, out: &mut dyn Write) -> Result<Exit> {
    if args.ui {
        let log = |line: &str| eprintln!("{line}");
        let rows = super::uibench::run(args.ui_runs as usize, args.ui_epochs as usize, &log)?;
        let mut t = Table::new(&["what", "measured"]);
        for (k, v) in rows {
            t.rows.push(vec![Value::Text(k), Value::Text(v)]);
        }
        print_table(&t, args.format.format(), out)?;
        return Ok(Exit::Ok);
    }
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
        sweep,
        kernels,
        optimizers: args_optimizers,
        load,
        threads,
        ..
    } = args;
    if batch.contains(&0) {
        return Err(Error::Usage("--batch sizes must be >= 1".into()).into());
    }
    if kernels {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(
                Error::Usage("--sizes needs at least two widths of at least 1".into()).into(),
            );
        }
        let rows = bench::kernels(&sizes, &batch, &dtype, 10 * reps as usize);
        let mut t = Table::new(&[
            "product", "dtype", "rows_a", "rows_w", "cols", "GFLOP/s", "of_peak",
        ]);
        for r in rows {
            let (n, h, k) = r.shape;
            t.rows.push(vec![
                Value::Text(r.product.into()),
                Value::Text(r.dtype.as_str().into()),
                Value::Integer(n as i64),
                Value::Integer(h as i64),
                Value::Integer(k as i64),
                Value::Real((r.gflops * 10.0).round() / 10.0),
                Value::Real((r.of_peak * 1000.0).round() / 1000.0),
            ]);
        }
        print_table(&t, format.format(), out)?;
        return Ok(Exit::Ok);
    }
    // The same limits as a spec's: widths, parameters, tensor sizes.
    for &dtype in &dtype {
        let mut config = RunConfig::default();
        config.model.sizes = sizes.clone();
        config.model.dtype = dtype;
        config
            .validate()
            .map_err(|e| Error::Usage(format!("--sizes {sizes:?}: {}", e.msg)))?;
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
    if load {
        let n = usize::from(threads.threads.unwrap_or(1));
        if n < 2 {
            return Err(Error::Usage(
                "--load compares one thread with several: give --threads 2 (or 3, 4)".into(),
            )
            .into());
        }
        let rows = bench::threads_under_load(&opts, n, &log)?;
        let mut t = Table::new(&[
            "dtype",
            "batch",
            "threads",
            "s_1_thread",
            "s_quiet",
            "speedup",
            "eval_speedup",
            "s_loaded",
            "load_loss",
        ]);
        let r3 = |x: f64| Value::Real((x * 1000.0).round() / 1000.0);
        for r in rows {
            t.rows.push(vec![
                Value::Text(r.dtype.as_str().into()),
                Value::Integer(r.batch as i64),
                Value::Integer(r.threads as i64),
                r3(r.one),
                r3(r.many),
                r3(r.speedup),
                r3(r.eval_speedup),
                r3(r.loaded),
                r3(r.load_loss),
            ]);
        }
        print_table(&t, format.format(), out)?;
        return Ok(Exit::Ok);
    }
    if args_optimizers {
        let rows = bench::optimizers(&opts, &log)?;
        let mut t = Table::new(&[
            "optimizer",
            "dtype",
            "batch",
            "seconds",
            "vs_plain_sgd",
            "state_MB",
        ]);
        for r in rows {
            t.rows.push(vec![
                Value::Text(r.optimizer),
                Value::Text(r.dtype.as_str().into()),
                Value::Integer(r.batch as i64),
                Value::Real((r.seconds * 1000.0).round() / 1000.0),
                Value::Real((r.ratio * 1000.0).round() / 1000.0),
                Value::Real((r.state_bytes as f64 / 1e6 * 100.0).round() / 100.0),
            ]);
        }
        print_table(&t, format.format(), out)?;
        eprintln!("peak RSS of this process: {:.0} MB", bench::peak_rss_mb());
        return Ok(Exit::Ok);
    }
    let bench::Report { rows, notes } = bench::run(&opts, &log)?;
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
            "of_peak",
            "fusion_gain",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    Value::Text(r.what.clone()),
                    Value::Text(r.dtype.as_str().into()),
                    Value::Integer(r.batch as i64),
                    Value::Real((r.seconds * 1000.0).round() / 1000.0),
                    Value::Integer(r.samples_per_s.round() as i64),
                    Value::Real((r.gflops * 10.0).round() / 10.0),
                    Value::Real((r.gemm_gflops * 10.0).round() / 10.0),
                    Value::Real((r.efficiency * 100.0).round() / 100.0),
                    if r.of_peak.is_finite() {
                        Value::Real((r.of_peak * 1000.0).round() / 1000.0)
                    } else {
                        Value::Null
                    },
                    Value::Real((r.fusion_gain * 100.0).round() / 100.0),
                ]
            })
            .collect(),
    };
    let mut notes = notes;
    if let Some(spec) = &sweep {
        notes.extend(sweep_rates(spec)?);
    }
    print_table(&t, format.format(), out)?;
    if format.format() == Format::Text {
        for (k, v) in notes {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(Exit::Ok)
}

/// Train `spec` with --jobs 2, then with --jobs 1 --threads 2 (this binary, each into a store of its
/// own that is removed after): runs per hour of each, and the share of the epochs' time spent evaluating.
fn sweep_rates(spec: &std::path::Path) -> Result<Vec<(String, String)>> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("mlp-runner-bench-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (label, args) in [
        ("--jobs 2", ["--jobs", "2", "--threads", "1"]),
        ("--jobs 1 --threads 2", ["--jobs", "1", "--threads", "2"]),
    ] {
        let db = dir.join(format!("{}.db", label.replace([' ', '-'], "")));
        eprintln!("training {} with {label} ...", spec.display());
        let t = std::time::Instant::now();
        let status = std::process::Command::new(&exe)
            .arg(spec)
            .args(args)
            .arg("--db")
            .arg(&db)
            .stdout(std::process::Stdio::null())
            .status()?;
        let seconds = t.elapsed().as_secs_f64();
        if !status.success() {
            return Err(
                Error::Usage(format!("training {} failed ({status})", spec.display())).into(),
            );
        }
        let store = mlp_runner::store::Store::open_read_only(&db)?;
        let r = store.evaluation_share()?;
        let row = r.rows.first().cloned().unwrap_or_default();
        let runs = match row.first() {
            Some(Value::Integer(n)) => *n as f64,
            _ => 0.0,
        };
        let eval = match row.get(1) {
            Some(Value::Real(x)) => *x,
            _ => f64::NAN,
        };
        store.close()?;
        out.push((
            format!("the sweep {} with {label}", spec.display()),
            format!(
                "{runs:.0} runs in {seconds:.1} s: {:.0} runs per hour; {:.0}% of each epoch spent evaluating",
                runs * 3600.0 / seconds,
                100.0 * eval
            ),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

impl CommandFacts for BenchArgs {
    fn threads(&self) -> Option<ThreadsArg> {
        Some(self.threads)
    }
}
