//! Records what the bits of a run may depend on, for the determinism envelope stored with each run:
//! the git commit and dirty flag of the source, and the rustc version.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = match run("git", &["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) => {
            if s.is_empty() {
                "0"
            } else {
                "1"
            }
        }
        None => "",
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLP_RUNNER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=MLP_RUNNER_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=MLP_RUNNER_RUSTC_VERSION={version}");
    for path in [
        ".git/HEAD",
        ".git/index",
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
