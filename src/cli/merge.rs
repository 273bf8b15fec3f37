//! `merge`: combining result stores (one per shard) into one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mlp_runner::sweep::merge;
use mlp_runner::text::clean;

use super::Exit;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The stores to merge (read-only).
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The store to merge into (created if needed).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
}

pub fn merge(args: MergeArgs, out: &mut dyn Write) -> Result<Exit> {
    let MergeArgs { sources, output } = args;
    let srcs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let r = merge::merge(&srcs, &output)?;
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
    for u in &r.unfinished {
        writeln!(
            out,
            "  unfinished: run {} {} ({}) in {}",
            u.run_id,
            clean(&u.name),
            u.status,
            u.source.display()
        )?;
    }
    for c in &r.conflicts {
        writeln!(out, "REPRODUCIBILITY FAILURE: {c}")?;
    }
    Ok(if r.conflicts.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}
