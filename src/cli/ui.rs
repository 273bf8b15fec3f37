//! `ui` (serve the dashboard) and `report` (write it as one HTML file).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mlp_runner::files::{Guard, write_atomically};
use mlp_runner::report::ui;
use mlp_runner::store::Store;
use mlp_runner::{Error, text::clean};

use super::args::{CommandFacts, DbArg, Exit};

#[derive(Debug, Args)]
pub struct UiArgs {
    /// The port to listen on (0: any free port).
    #[arg(allow_negative_numbers = true, long, default_value_t = 8000)]
    pub port: u16,
    /// The address to listen on. Anything but a loopback address serves the store to the network, with no
    /// authentication.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
    pub host: IpAddr,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The experiments to include (default: all).
    pub experiments: Vec<String>,
    /// The HTML file to write.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace the output even if it is an SQLite database (never the store this reads).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
}

pub fn serve(db: &Path, args: UiArgs, out: &mut dyn Write) -> Result<Exit> {
    let opts = ui::ServeOptions {
        db: db.to_path_buf(),
        addr: SocketAddr::new(args.host, args.port),
    };
    let server = ui::Server::start(&opts)?;
    if !args.host.is_loopback() {
        eprintln!(
            "warning: serving {} on {} to the network: there is no authentication; anyone who reaches \
             this address reads every run",
            db.display(),
            server.addr
        );
    }
    writeln!(
        out,
        "serving {} read-only at http://{}/ (Ctrl-C stops)",
        db.display(),
        server.addr
    )?;
    out.flush()?;
    let stop = super::train::interrupt_flag();
    server.wait(&stop);
    Ok(Exit::Ok)
}

pub fn report(db: &Path, args: ReportArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = Store::open_read_only(db)?;
    let html = ui::report(&store, &args.experiments)?;
    let guard = Guard {
        store: Some(db),
        inputs: &[],
        force: args.force,
    };
    write_atomically(&args.output, &guard, |tmp| {
        std::fs::write(tmp, html.as_bytes()).map_err(|e| Error::io(tmp, e))
    })?;
    writeln!(
        out,
        "wrote {} ({} KB; data, scripts and styles inline: it opens with no network)",
        clean(&args.output.display().to_string()),
        html.len() / 1024
    )?;
    Ok(Exit::Ok)
}

impl CommandFacts for UiArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}

impl CommandFacts for ReportArgs {
    fn db(&self) -> Option<&DbArg> {
        Some(&self.db)
    }
}
