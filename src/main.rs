//! The `runner` binary: parse the command line, run the command, map the outcome to an exit code
//! (0 success, 1 a verify mismatch or a failed run, 2 bad input or an error, 130 interrupted).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mlp_runner::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `runner verfy 7`: clap sees a spec path and a stray argument; say what was probably meant.
            if let Some(hint) = cli::suggest_command(std::env::args().skip(1)) {
                eprintln!("error: {hint}");
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    if let Err(msg) = mlp_runner::kernel::check_impl_env() {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    // The GEMM's thread pool reads its size once, at its first use: set it before anything runs.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", cli.threads.to_string()) };
    // Not locked for the whole command: training workers write their log lines to stdout too.
    let mut out = std::io::stdout();
    let result = cli::execute(cli, &mut out);
    let _ = out.flush();
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Failure) => ExitCode::from(1),
        Ok(Exit::Interrupted) => ExitCode::from(130),
        Err(e) => {
            let err = anyhow::Error::from(e);
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
