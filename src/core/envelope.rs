//! The determinism envelope: what a run's bits may depend on besides its config and data, recorded with
//! every run and compared by `verify` (crate and compiler versions, source commit, GEMM kernel, elementary
//! functions, CPU, threads).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::core::config::RunConfig;
use crate::core::kernel::Kernel;
use crate::core::math::Math;
use crate::core::pool;
use crate::text::hex;

/// The Cargo.lock this binary was built from: pins every dependency version.
const CARGO_LOCK: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));

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
    /// The elementary functions ([`Math::describe`]): `None` for the platform's C library (runs before
    /// schema version 7).
    pub math: Option<String>,
    pub threads: usize,
    pub os: String,
    pub host: String,
}

impl Envelope {
    /// The envelope of a run with this config in this process.
    pub fn for_run(cfg: &RunConfig) -> Self {
        Self::with_numerics(
            Kernel::for_run(cfg.model.dtype),
            Math::for_run(),
            cfg.model.dtype,
        )
    }

    /// The envelope of this process for a run of `dtype` whose products use `kernel` and whose
    /// elementary functions are `math`'s.
    pub fn with_numerics(kernel: Kernel, math: Math, dtype: crate::core::config::Dtype) -> Self {
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
            gemm_kernel: kernel.describe(dtype),
            math: math.describe().map(str::to_string),
            threads: pool::configured_threads(),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            host: hostname(),
        }
    }

    /// Every field, by its column name in the store, with its value (`host` included; the owner's pid and
    /// times are the queue's).
    pub fn fields(&self) -> Vec<(&'static str, Field)> {
        vec![
            ("crate_version", Field::Text(self.crate_version.clone())),
            ("git_commit", Field::Text(self.git_commit.clone())),
            (
                "git_dirty",
                self.git_dirty
                    .map_or(Field::Null, |d| Field::Int(i64::from(d))),
            ),
            ("rustc_version", Field::Text(self.rustc_version.clone())),
            (
                "cargo_lock_sha256",
                Field::Text(self.cargo_lock_sha256.clone()),
            ),
            ("cpu_model", Field::Text(self.cpu_model.clone())),
            ("cpu_features", Field::Text(self.cpu_features.clone())),
            ("gemm_kernel", Field::Text(self.gemm_kernel.clone())),
            ("math", self.math.clone().map_or(Field::Null, Field::Text)),
            ("threads", Field::Int(self.threads as i64)),
            ("os", Field::Text(self.os.clone())),
            ("host", Field::Text(self.host.clone())),
        ]
    }

    /// The value of field `name` as the store's text cast of it renders it (`None` for NULL or an unknown
    /// name).
    pub fn text(&self, name: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.text())
    }

    /// Do two values of field `name`, as text, stand for the same bits? For `gemm_kernel` only the
    /// arithmetic contract counts: lanes16 gives the same bits whatever implementation ran it.
    pub fn same_bits(name: &str, a: Option<&str>, b: Option<&str>) -> bool {
        match (name, a, b) {
            ("gemm_kernel", Some(a), Some(b)) => Kernel::contract(a) == Kernel::contract(b),
            _ => a == b,
        }
    }
}

/// What a stored run was trained with, as its envelope recorded it (the `gemm_kernel` and `math`
/// columns; both `None` for a run no process has trained): what `verify` re-trains it with and a resumed
/// run goes on with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrainedWith {
    pub kernel: Option<String>,
    pub math: Option<String>,
}

impl TrainedWith {
    /// The kernel of the run's products ([`Kernel::of_stored`]).
    pub fn kernel(&self, dtype: crate::core::config::Dtype) -> Kernel {
        Kernel::of_stored(self.kernel.as_deref(), dtype)
    }

    /// The run's elementary functions ([`Math::of_stored`]).
    pub fn math(&self) -> Math {
        Math::of_stored(self.kernel.as_deref(), self.math.as_deref())
    }

    /// The envelope of this process training the run on.
    pub fn envelope(&self, dtype: crate::core::config::Dtype) -> Envelope {
        Envelope::with_numerics(self.kernel(dtype), self.math(), dtype)
    }
}

/// The fields that can change a run's bits, compared by `verify` (by name, in this order).
pub const BIT_FIELDS: [&str; 10] = [
    "crate_version",
    "git_commit",
    "git_dirty",
    "rustc_version",
    "cargo_lock_sha256",
    "gemm_kernel",
    "math",
    "cpu_model",
    "threads",
    "os",
];

/// An envelope value, typed as its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Text(String),
    Int(i64),
    Null,
}

impl Field {
    pub fn text(&self) -> Option<String> {
        match self {
            Field::Text(s) => Some(s.clone()),
            Field::Int(i) => Some(i.to_string()),
            Field::Null => None,
        }
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
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        f.push("neon");
    }
    f
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        // Windows names the machine here.
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
