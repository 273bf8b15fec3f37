//! `data export-png` and `data info`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use mlp_runner::core::data::{self, DataFormat};

use super::args::{CommandFacts, Exit};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the PNG-folder layout (`training/<digit>/*.png`, `testing/<digit>/*.png`) from a data folder.
    #[command(after_help = "Example:\n  runner data export-png data/mnist /tmp/mnist-png")]
    ExportPng {
        /// A data folder with the MNIST IDX files, e.g. data/mnist.
        dir: PathBuf,
        /// The folder to write (created): training/DIGIT/*.png and testing/DIGIT/*.png.
        out: PathBuf,
    },
    /// Print what a data folder holds: format, counts, image size, SHA-256 of the decoded samples.
    #[command(after_help = "Example:\n  runner data info data/mnist")]
    Info {
        /// A data folder: the MNIST IDX files or the PNG layout.
        dir: PathBuf,
        /// auto, idx or png.
        #[arg(long, default_value = "auto", value_parser = parse_format)]
        format: DataFormat,
    },
}

fn parse_format(s: &str) -> std::result::Result<DataFormat, String> {
    match s {
        "auto" => Ok(DataFormat::Auto),
        "idx" => Ok(DataFormat::Idx),
        "png" => Ok(DataFormat::Png),
        _ => Err("expected auto, idx or png".into()),
    }
}

pub fn data(cmd: DataCommand, out: &mut dyn Write) -> Result<Exit> {
    match cmd {
        DataCommand::ExportPng { dir, out: dest } => {
            let ds = data::load(&dir, DataFormat::Idx)?;
            let (train, test) = data::export_png(&ds, &dest)?;
            writeln!(
                out,
                "wrote {train} training and {test} test images to {}",
                dest.display()
            )?;
        }
        DataCommand::Info { dir, format } => {
            let ds = data::load(&dir, format)?;
            let checked = ds.format == DataFormat::Idx && dir.join("SHA256SUMS").is_file();
            writeln!(
                out,
                "{}: format {}, {} training and {} test images of {}x{}, dataset sha256 {}",
                dir.display(),
                ds.format.as_str(),
                ds.train.len(),
                ds.test.len(),
                ds.train.rows,
                ds.train.cols,
                ds.sha256(None, None, None)
            )?;
            writeln!(
                out,
                "  files {}",
                if checked {
                    "checked against SHA256SUMS"
                } else if ds.format == DataFormat::Idx {
                    "not checked: no SHA256SUMS in the folder"
                } else {
                    "in the PNG layout (no checksums)"
                }
            )?;
            for (split, s) in [("training", &ds.train), ("test", &ds.test)] {
                let mut counts = [0usize; data::NUM_CLASSES];
                for &l in &s.labels {
                    counts[l as usize] += 1;
                }
                let per: Vec<String> = counts.iter().map(usize::to_string).collect();
                writeln!(out, "  {split:<8} images per label 0-9: {}", per.join(" "))?;
            }
        }
    }
    Ok(Exit::Ok)
}

impl CommandFacts for DataCommand {}
