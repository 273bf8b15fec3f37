//! The determinism envelope: what a run's bits may depend on besides its config and data, recorded with
//! every run and compared by `verify` (crate and compiler versions, source commit, GEMM kernel, CPU, threads).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::hex;
use crate::kernel::Kernel;
use crate::spec::RunConfig;

/// The Cargo.lock this binary was built from: pins every dependency version.
const CARGO_LOCK: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));

/// The GEMM library's version, recorded with the kernel it selects (its kernels round differently).
pub const MATRIXMULTIPLY_VERSION: &str = "0.3.11";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub crate_version: String,
    pub git_commit: String,
    /// `None` when git was not available at build time.
    pub git_dirty: Option<bool>,
    pub rustc_version: String,
    pub cargo_lock_sha256: String,
    pub cpu_model: String,
    pub cpu_features: String,
    pub gemm_kernel: String,
    pub threads: usize,
    pub os: String,
    pub host: String,
}

impl Envelope {
    /// The envelope of a run with this config in this process.
    pub fn for_run(cfg: &RunConfig) -> Self {
        Self::with_kernel(Kernel::for_run(cfg.model.dtype))
    }

    /// The envelope of this process for a run whose products use `kernel`.
    pub fn with_kernel(kernel: Kernel) -> Self {
        Envelope {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: env!("MLP_RUNNER_GIT_COMMIT").to_string(),
            git_dirty: match env!("MLP_RUNNER_GIT_DIRTY") {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            },
            rustc_version: env!("MLP_RUNNER_RUSTC_VERSION").to_string(),
            cargo_lock_sha256: hex(&Sha256::digest(CARGO_LOCK)),
            cpu_model: cpu_model(),
            cpu_features: cpu_features().join(" "),
            gemm_kernel: kernel.describe(),
            threads: gemm_threads(),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            host: hostname(),
        }
    }

    /// The fields that can change a run's bits, as (name, value) pairs rendered as the store's text casts of
    /// them (the order of `Store::run`'s envelope), for comparing two envelopes.
    pub fn bit_relevant(&self) -> Vec<(&'static str, String)> {
        vec![
            ("crate_version", self.crate_version.clone()),
            ("git_commit", self.git_commit.clone()),
            // As stored: 1, 0, or empty when unknown.
            (
                "git_dirty",
                self.git_dirty
                    .map(|d| u8::from(d).to_string())
                    .unwrap_or_default(),
            ),
            ("rustc_version", self.rustc_version.clone()),
            ("cargo_lock_sha256", self.cargo_lock_sha256.clone()),
            // lanes16 gives the same bits on every CPU: only the contract counts, not the implementation.
            (
                "gemm_kernel",
                Kernel::contract(&self.gemm_kernel).to_string(),
            ),
            ("cpu_model", self.cpu_model.clone()),
            ("threads", self.threads.to_string()),
            ("os", self.os.clone()),
        ]
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The SIMD features that decide which kernel implementation runs.
fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("sse2") {
            f.push("sse2");
        }
        if is_x86_feature_detected!("avx") {
            f.push("avx");
        }
        if is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
    }
    f
}

/// Threads matrixmultiply uses per GEMM: `MATMUL_NUM_THREADS` (set from `--threads`), clamped to 1..=4 as
/// matrixmultiply does. (`runner` always sets it; a library user who does not gets matrixmultiply's own
/// default, the physical core count, which this does not see.)
pub fn gemm_threads() -> usize {
    std::env::var("MATMUL_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 4)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
