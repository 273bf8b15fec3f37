//! The matrix kernels of an SGD step, and which of them a run uses.
//!
//! Two arithmetic contracts fix every rounding, so that a run's bits are the same on every CPU:
//! `chain` (every new run's: each output one fused multiply-add chain in term order, W in panels while a
//! run trains) and `lanes` (lanes16 in f32, lanes8 in f64: dot products in L lanes and a tree; what
//! runs were trained with before the chain kernels, kept so that they verify and resume with their bits;
//! its `combine` is the chain contract's too). Each contract has one implementation per instruction set
//! (`lanes::simd`: portable, AVX2+FMA, AVX-512), chosen at run time (`implementation`, or
//! `MLP_RUNNER_KERNEL_IMPL`); `reference` writes each contract one element at a time, what the
//! fast paths are tested against. [`Kernel`] is the choice a run records (`gemm_kernel`): the chain or
//! lanes contract, or `matrixmultiply`'s GEMM for f64 runs older than lanes8. A workspace reaches them
//! only through [`products::Products`] (forward, backward, update, gradient), which
//! `products::build` implements for each [`Kernel`]: the single place a kernel choice becomes code.
//!
//! The public surface is [`Kernel`] and the [`products::Products`] trait; the implementations are
//! `pub(crate)` at most.

use std::sync::OnceLock;

use crate::core::config::Dtype;

/// The GEMM library's version, recorded with the kernel it selects (its kernels round differently).
pub const MATRIXMULTIPLY_VERSION: &str = "0.3.11";

/// Lanes of the f32 contract.
pub const LANES: usize = 16;

/// Set to `portable`, `avx2-fma` or `neon` (aarch64) to run the chain and lanes kernels with that
/// implementation instead of the fastest one (same bits, slower; for checking that claim). `portable` on x86-64 without FMA instructions
/// calls `fma` for every multiply-add: minutes per MNIST epoch.
pub const IMPL_ENV: &str = "MLP_RUNNER_KERNEL_IMPL";

/// Set to 1 to train new f64 runs with matrixmultiply's GEMM, as versions before lanes8 did (to make such
/// runs for a test, or to compare the two). Not for normal use.
pub const F64_GEMM_ENV: &str = "MLP_RUNNER_F64_GEMM";

/// Set to `chain`, `lanes` or `gemm` to train new runs with that kernel instead of the default (chain):
/// how runs of earlier versions were trained, to make such runs for a test or to compare. Not for
/// normal use.
pub const TRAIN_KERNEL_ENV: &str = "MLP_RUNNER_TRAIN_KERNEL";

/// Which matrix products a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The chain kernels of `chain` ("mlp-runner-chain", f32 and f64): every output one fused
    /// multiply-add chain in term order, W in panels while training; the same bits on every CPU.
    Chain,
    /// This module's lanes kernels (lanes16 in f32, lanes8 in f64): the same bits on every CPU; what
    /// runs were trained with before the chain kernels, kept to verify and resume them.
    Lanes,
    /// `matrixmultiply`'s GEMM: what f64 runs used before lanes8; kept to verify them.
    Gemm,
}

impl Kernel {
    /// The kernel a new run of this dtype trains with: the chain kernels, unless [`TRAIN_KERNEL_ENV`]
    /// names another (or, for f64, [`F64_GEMM_ENV`] is 1: how runs were trained before lanes8).
    pub fn for_run(dtype: Dtype) -> Kernel {
        if dtype == Dtype::F64 && std::env::var(F64_GEMM_ENV).is_ok_and(|v| v == "1") {
            return Kernel::Gemm;
        }
        match std::env::var(TRAIN_KERNEL_ENV).as_deref() {
            Ok("lanes") => Kernel::Lanes,
            Ok("gemm") => Kernel::Gemm,
            _ => Kernel::Chain,
        }
    }

    /// Check [`TRAIN_KERNEL_ENV`] when it is set: an error naming the values it takes otherwise.
    pub fn check_env() -> crate::Result<()> {
        match std::env::var(TRAIN_KERNEL_ENV) {
            Ok(v) if !["chain", "lanes", "gemm"].contains(&v.as_str()) => {
                Err(crate::Error::Usage(format!(
                    "{TRAIN_KERNEL_ENV}={v:?} is not a kernel; use chain (the default), lanes or gemm, \
                     or unset it"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The kernel a stored run was trained with, by its envelope's `gemm_kernel`: what `verify`
    /// re-trains it with and a resumed run continues with; without one (a run not trained yet), the
    /// kernel of a new run.
    pub fn of_stored(description: Option<&str>, dtype: Dtype) -> Kernel {
        match description {
            Some(d) if d.starts_with("matrixmultiply-") => Kernel::Gemm,
            Some(d) if d.starts_with("mlp-runner-lanes") => Kernel::Lanes,
            Some(d) if d.starts_with("mlp-runner-chain") => Kernel::Chain,
            _ => Kernel::for_run(dtype),
        }
    }

    /// What the envelope records: the arithmetic contract for this crate's kernels (the same on every
    /// CPU) with the implementation that ran it, or the GEMM library and the kernel it selects on this
    /// CPU.
    pub fn describe(self, dtype: Dtype) -> String {
        match (self, dtype) {
            (Kernel::Chain, _) => format!("mlp-runner-chain/{}", implementation().as_str()),
            (Kernel::Lanes, Dtype::F32) => {
                format!("mlp-runner-lanes16/{}", implementation().as_str())
            }
            (Kernel::Lanes, Dtype::F64) => {
                format!("mlp-runner-lanes8/{}", implementation().as_str())
            }
            (Kernel::Gemm, _) => format!(
                "matrixmultiply-{MATRIXMULTIPLY_VERSION}/{}",
                matrixmultiply_kernel()
            ),
        }
    }

    /// A short name for tables: chain, lanes16, lanes8 or matrixmultiply.
    pub fn name(self, dtype: Dtype) -> &'static str {
        match (self, dtype) {
            (Kernel::Chain, _) => "chain",
            (Kernel::Lanes, Dtype::F32) => "lanes16",
            (Kernel::Lanes, Dtype::F64) => "lanes8",
            (Kernel::Gemm, _) => "matrixmultiply",
        }
    }

    /// The part of [`Kernel::describe`] that decides the bits (for this crate's kernels: not the
    /// implementation).
    pub fn contract(description: &str) -> &str {
        match description.split_once('/') {
            Some((c @ ("mlp-runner-lanes16" | "mlp-runner-lanes8" | "mlp-runner-chain"), _)) => c,
            _ => description,
        }
    }
}

pub(crate) mod chain;
pub(crate) mod lanes;
pub mod products;
#[cfg(test)]
pub(crate) mod reference;
pub mod rule;
#[cfg(test)]
mod tests;

pub(crate) use lanes::{Coef, Epilogue, Lane, Mat, MatMut, Vector, abt, combine, update_then_abt};

/// The kernel matrixmultiply selects at run time on this CPU (same order of tests as its `detect`).
fn matrixmultiply_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2") {
            return "fma-avx2";
        }
        if is_x86_feature_detected!("avx") {
            return "avx";
        }
    }
    "fallback"
}

/// How the lanes contract is carried out on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    Avx512,
    Avx2Fma,
    /// aarch64's 128-bit vectors (every aarch64 CPU has them).
    Neon,
    Portable,
}

impl Implementation {
    pub fn as_str(self) -> &'static str {
        match self {
            Implementation::Avx512 => "avx512",
            Implementation::Avx2Fma => "avx2-fma",
            Implementation::Neon => "neon",
            Implementation::Portable => "portable",
        }
    }
}

/// The fastest implementation this CPU supports, or the one [`IMPL_ENV`] names if the CPU supports it
/// (read once per process).
pub fn implementation() -> Implementation {
    #[cfg(test)]
    if let Some(imp) = FORCED.get() {
        return imp;
    }
    static IMPL: OnceLock<Implementation> = OnceLock::new();
    *IMPL.get_or_init(|| {
        let supported = supported();
        let wanted = std::env::var(IMPL_ENV).ok();
        supported
            .iter()
            .copied()
            .find(|i| wanted.as_deref() == Some(i.as_str()))
            .or(supported.last().copied())
            .unwrap_or(Implementation::Portable)
    })
}

#[cfg(test)]
thread_local! {
    static FORCED: std::cell::Cell<Option<Implementation>> = const { std::cell::Cell::new(None) };
}

/// `f()` with [`implementation`] returning `imp` on this thread (tests of each path through the public
/// walks).
#[cfg(test)]
pub(crate) fn with_implementation<R>(imp: Implementation, f: impl FnOnce() -> R) -> R {
    FORCED.set(Some(imp));
    let r = f();
    FORCED.set(None);
    r
}

/// Check [`IMPL_ENV`] when it is set: an error naming the implementations this CPU runs otherwise.
pub fn check_impl_env() -> crate::Result<()> {
    let Ok(wanted) = std::env::var(IMPL_ENV) else {
        return Ok(());
    };
    let supported = supported();
    if supported.iter().any(|i| i.as_str() == wanted) {
        return Ok(());
    }
    let names: Vec<&str> = supported.iter().map(|i| i.as_str()).collect();
    Err(crate::Error::Usage(format!(
        "{IMPL_ENV}={wanted:?} is not a kernel implementation this CPU runs; use one of: {} (or unset it \
         for the fastest)",
        names.join(", ")
    )))
}

/// The implementations this CPU can run, slowest first.
pub fn supported() -> Vec<Implementation> {
    #[allow(unused_mut)]
    let mut v = vec![Implementation::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Implementation::Avx2Fma);
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(Implementation::Avx512);
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        v.push(Implementation::Neon);
    }
    v
}
