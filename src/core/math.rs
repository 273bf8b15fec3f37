//! The elementary functions a run's bits depend on, and which implementation of them a run uses.
//!
//! Besides the matrix products (whose bits the kernel contracts fix), a run computes `exp` (softmax, the
//! sigmoid), `ln` (the cross-entropy, the Box-Muller draws of the initial weights), `tanh` and `cos`
//! (Box-Muller). `+ - * /`, `fma` and `sqrt` are correctly rounded by IEEE 754 on every CPU; these are
//! not, and the C library's versions differ between platforms: glibc's `tanhf` on x86-64 and on
//! aarch64 round some inputs differently, and musl, macOS and Windows have their own.
//!
//! [`Math::Owned`] (every new run's) computes them with one implementation compiled into the binary:
//! the `libm` crate (a Rust port of musl's and FreeBSD's libm, errors below 1 ulp), pinned to one
//! version, so that a run's bits no longer depend on the platform's C library: the same on every CPU
//! architecture and OS the binary builds for. [`Math::Platform`] calls the C library as runs before
//! schema version 7 did; it is kept so that they verify and resume with their bits (on the platform
//! they were trained on). The envelope records the choice (`math`: `libm-0.2.16`, or NULL for the
//! platform's).
//!
//! Must not import anything but `crate::Error` (the numerics below and beside it import it).

/// The `libm` crate's version: pinned (`=0.2.16` in Cargo.toml), since another version may round
/// differently.
pub const LIBM_VERSION: &str = "0.2.16";

/// What the envelope records for [`Math::Owned`].
pub const OWNED: &str = "libm-0.2.16";

/// Set to `platform` to train new runs with the C library's functions, as versions before schema 7 did
/// (to make such runs for a test, or to compare). Not for normal use.
pub const MATH_ENV: &str = "MLP_RUNNER_MATH";

/// Which implementation of the elementary functions a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Math {
    /// The `libm` crate compiled into the binary: the same bits on every platform.
    Owned,
    /// The platform's C library (through `std`): what runs before schema version 7 used.
    Platform,
}

impl Math {
    /// What a new run uses: [`Math::Owned`], unless [`MATH_ENV`] is `platform`.
    pub fn for_run() -> Math {
        match std::env::var(MATH_ENV).as_deref() {
            Ok("platform") => Math::Platform,
            _ => Math::Owned,
        }
    }

    /// Check [`MATH_ENV`] when it is set: an error naming the values it takes otherwise.
    pub fn check_env() -> crate::Result<()> {
        match std::env::var(MATH_ENV) {
            Ok(v) if !["owned", "platform"].contains(&v.as_str()) => {
                Err(crate::Error::Usage(format!(
                    "{MATH_ENV}={v:?} is not a choice of elementary functions; use owned (the default) or \
                 platform, or unset it"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The functions a stored run was trained with, by its envelope: `kernel` (its `gemm_kernel`: NULL
    /// while no process has trained it) and `math`. A run trained before schema 7 has a kernel and no
    /// math: the platform's; one not trained yet gets a new run's.
    pub fn of_stored(kernel: Option<&str>, math: Option<&str>) -> Math {
        match (kernel, math) {
            (_, Some(_)) => Math::Owned,
            (Some(_), None) => Math::Platform,
            (None, None) => Math::for_run(),
        }
    }

    /// What the envelope records: the owned functions' name and version, or `None` (NULL) for the C
    /// library's, as stores before schema 7 hold.
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Math::Owned => Some(OWNED),
            Math::Platform => None,
        }
    }

    /// e^x in f64.
    #[inline]
    pub fn exp(self, x: f64) -> f64 {
        match self {
            Math::Owned => libm::exp(x),
            Math::Platform => x.exp(),
        }
    }

    /// ln x in f64.
    #[inline]
    pub fn ln(self, x: f64) -> f64 {
        match self {
            Math::Owned => libm::log(x),
            Math::Platform => x.ln(),
        }
    }

    /// cos x in f64.
    #[inline]
    pub fn cos(self, x: f64) -> f64 {
        match self {
            Math::Owned => libm::cos(x),
            Math::Platform => x.cos(),
        }
    }
}

/// The elementary functions of a float type a model is trained in, under a [`Math`].
pub trait Elementary: Copy {
    /// e^x.
    fn exp_in(self, math: Math) -> Self;
    /// tanh x.
    fn tanh_in(self, math: Math) -> Self;
}

impl Elementary for f32 {
    #[inline]
    fn exp_in(self, math: Math) -> f32 {
        match math {
            Math::Owned => libm::expf(self),
            Math::Platform => self.exp(),
        }
    }
    #[inline]
    fn tanh_in(self, math: Math) -> f32 {
        match math {
            Math::Owned => libm::tanhf(self),
            Math::Platform => self.tanh(),
        }
    }
}

impl Elementary for f64 {
    #[inline]
    fn exp_in(self, math: Math) -> f64 {
        math.exp(self)
    }
    #[inline]
    fn tanh_in(self, math: Math) -> f64 {
        match math {
            Math::Owned => libm::tanh(self),
            Math::Platform => self.tanh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owned f32 functions are within 2 ulp of the exact value (computed in f64), the f64 ones within
    /// 4 ulp of the platform's; and exact where they must be.
    #[test]
    fn owned_functions_are_accurate() {
        // |error| in units of the f32 spacing at the exact value.
        let ulps32 = |a: f32, b: f64| {
            let spacing =
                f64::from(f32::EPSILON) * 2f64.powi((b.abs().max(1e-30)).log2().floor() as i32);
            (f64::from(a) - b).abs() / spacing
        };
        let mut x = -30.0f32;
        while x < 30.0 {
            assert!(
                ulps32(x.exp_in(Math::Owned), f64::from(x).exp()) <= 2.0,
                "expf({x})"
            );
            assert!(
                ulps32(x.tanh_in(Math::Owned), f64::from(x).tanh()) <= 2.0,
                "tanhf({x})"
            );
            x += 0.0137;
        }
        let mut y = -700.0f64;
        while y < 700.0 {
            let (e, p) = (y.exp_in(Math::Owned), y.exp());
            assert!(((e - p) / p).abs() <= 4.0 * f64::EPSILON, "exp({y})");
            let t = y / 100.0;
            let (a, b) = (t.tanh_in(Math::Owned), t.tanh());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(f64::MIN_POSITIVE),
                "tanh({t})"
            );
            let c = Math::Owned.cos(t);
            assert!((c - t.cos()).abs() <= 4.0 * f64::EPSILON, "cos({t})");
            y += 0.731;
        }
        let mut z = 1e-300f64;
        while z < 1e300 {
            let (a, b) = (Math::Owned.ln(z), z.ln());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "ln({z})"
            );
            z *= 3.7;
        }
        assert_eq!(Math::Owned.ln(1.0), 0.0);
        assert_eq!(0f32.exp_in(Math::Owned), 1.0);
        assert_eq!((-200f32).exp_in(Math::Owned), 0.0);
        assert_eq!(30f32.tanh_in(Math::Owned), 1.0);
    }

    /// The owned functions give the bits they were pinned with on every platform: fixed values of this
    /// version of `libm`, written once from its output (a new version that rounds differently fails here
    /// before it changes a run's bits).
    #[test]
    fn owned_functions_keep_their_bits() {
        let h = |bits: &mut u64, v: u64| *bits = bits.rotate_left(7) ^ v;
        let mut acc = 0u64;
        let mut x = -20.0f32;
        while x < 20.0 {
            h(&mut acc, x.exp_in(Math::Owned).to_bits() as u64);
            h(&mut acc, x.tanh_in(Math::Owned).to_bits() as u64);
            let d = x as f64 * 1.37;
            h(&mut acc, d.exp_in(Math::Owned).to_bits());
            h(&mut acc, d.tanh_in(Math::Owned).to_bits());
            h(&mut acc, Math::Owned.ln(d.abs() + 1e-6).to_bits());
            h(&mut acc, Math::Owned.cos(d).to_bits());
            x += 0.01;
        }
        assert_eq!(format!("{acc:016x}"), PINNED);
    }

    const PINNED: &str = "2acbf114b9075738";

    #[test]
    fn stored_runs_keep_their_functions() {
        assert_eq!(
            Math::of_stored(Some("mlp-runner-chain/avx512"), None),
            Math::Platform
        );
        assert_eq!(
            Math::of_stored(Some("mlp-runner-chain/avx512"), Some(OWNED)),
            Math::Owned
        );
        assert_eq!(Math::Owned.describe(), Some(OWNED));
        assert!(OWNED.ends_with(LIBM_VERSION));
    }
}
