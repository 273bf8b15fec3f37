//! The `runner` binary: parse the command line, run the command through the library, map the outcome to
//! an exit code: 0 success (also when the reader of the output went away, as `runner ls | head -1`);
//! 1 a verify mismatch, a failed run or a merge missing runs; 2 bad input or an error; 3 a corrupt store;
//! 70 a bug; 130 interrupted.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // `runner help --help` (or `-h`) asks for help about help: clap refuses it; give the help.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "help") {
        args.retain(|a| a != "--help" && a != "-h");
    }
    let cli = match cli::Cli::try_parse_from(&args) {
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
    let env = mlp_runner::core::kernel::check_impl_env()
        .and_then(|()| mlp_runner::core::kernel::Kernel::check_env())
        .and_then(|()| mlp_runner::core::math::Math::check_env());
    if let Err(msg) = env {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    // The GEMM's thread pool reads its size once, at its first use: set it before anything runs.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", cli.threads().to_string()) };
    let result = if cli::trains(&cli) {
        // Not buffered, not locked: training workers write their log lines to standard output too.
        let mut out = cli::Labelled(std::io::stdout());
        cli::execute(cli, &mut out).and_then(|exit| Ok(out.flush().map(|()| exit)?))
    } else {
        let mut out = std::io::BufWriter::new(cli::Labelled(std::io::stdout()));
        cli::execute(cli, &mut out).and_then(|exit| Ok(out.flush().map(|()| exit)?))
    };
    match result {
        Ok(cli::Exit::Ok) => ExitCode::SUCCESS,
        Ok(cli::Exit::Failure) => ExitCode::from(1),
        Ok(cli::Exit::Interrupted) => ExitCode::from(130),
        Err(e) => {
            let code = cli::exit_code(&e);
            if code != 0 {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}
