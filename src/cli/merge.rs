//! `merge`: combining result stores (one per shard) into one, and saying which runs are still missing.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mlp_runner::store::merge;
use mlp_runner::sweep::spec;
use mlp_runner::text::clean;

use super::args::{CommandFacts, Exit};

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The stores to merge (read-only).
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The store to merge into (created if needed).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// The sweep's spec: every run of it must end up finished in the output.
    #[arg(long, value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// The number of shards the sweep was split into, to name the shard that owes a missing run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shards: Option<u64>,
    /// Exit 0 even when runs are missing (they are still listed).
    #[arg(long)]
    pub allow_incomplete: bool,
    /// When an input and the output hold one config trained with different kernels (different results
    /// of one configuration, not a failure), which copy stays current: `output` (the default) or `input`.
    /// The other is kept as history (`runner ls --all`).
    #[arg(long, value_name = "COPY", default_value = "output", value_parser = ["output", "input"])]
    pub prefer: String,
}

pub fn merge(args: MergeArgs, out: &mut dyn Write) -> Result<Exit> {
    let MergeArgs {
        sources,
        output,
        spec: spec_path,
        shards,
        allow_incomplete,
        prefer,
    } = args;
    let prefer = if prefer == "input" {
        merge::Prefer::Input
    } else {
        merge::Prefer::Output
    };
    let mut expected = merge::Expected {
        runs: Vec::new(),
        shards,
    };
    if let Some(path) = &spec_path {
        let exp = spec::load(path).map_err(mlp_runner::Error::from)?;
        expected.runs = exp
            .runs
            .iter()
            .map(|r| (r.name.clone(), r.config.hash()))
            .collect();
    }
    super::args::check_store_folder(&output)?;
    let srcs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let r = merge::merge(&srcs, &output, &expected, prefer)?;
    writeln!(
        out,
        "merged {} stores into {}: {} runs added, {} already there and identical, {} unfinished runs \
         not copied, {} experiments added",
        sources.len(),
        output.display(),
        r.runs_added,
        r.runs_identical,
        r.unfinished.len(),
        r.experiments_added
    )?;
    if r.runs_extended > 0 || r.rungs_decided > 0 {
        writeln!(
            out,
            "search: {} runs taken further from their shards (every shared epoch bit-identical), {} rungs \
             decided now that their runs are all here",
            r.runs_extended, r.rungs_decided
        )?;
    }
    for k in &r.kernel_differences {
        writeln!(out, "kernels differ: {k}")?;
    }
    for c in &r.conflicts {
        writeln!(out, "REPRODUCIBILITY FAILURE: {c}")?;
    }
    for m in &r.missing {
        let owner = m
            .shard
            .map(|s| format!(", owed by shard {} of {}", s.index, s.count))
            .unwrap_or_default();
        writeln!(
            out,
            "MISSING: run {} (config {}{owner}): {}",
            clean(&m.name),
            &m.config_hash[..m.config_hash.len().min(12)],
            clean(&m.state)
        )?;
    }
    if !r.missing.is_empty() {
        let what = match &spec_path {
            Some(p) => format!("of the {} runs of {}", expected.runs.len(), p.display()),
            None => "of the inputs".to_string(),
        };
        writeln!(
            out,
            "{} {} {what} {} not finished in {}{}",
            r.missing.len(),
            if r.missing.len() == 1 { "run" } else { "runs" },
            if r.missing.len() == 1 { "is" } else { "are" },
            output.display(),
            if allow_incomplete {
                " (--allow-incomplete: exit 0)"
            } else {
                "; train them (re-submit their shards) and merge again, or pass --allow-incomplete"
            }
        )?;
    }
    Ok(
        if !r.conflicts.is_empty() || (!r.missing.is_empty() && !allow_incomplete) {
            Exit::Failure
        } else {
            Exit::Ok
        },
    )
}

impl CommandFacts for MergeArgs {}
