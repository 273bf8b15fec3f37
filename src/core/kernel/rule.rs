//! The update rules of one optimizer step, element by element over a parameter array, its summed
//! gradient and the rule's state, in whatever layout the caller holds the three in (the chain kernels'
//! panels, or row-major).
//!
//! The caller hands the batch's summed gradient S = sum over its n samples of dC/dw (the product the
//! plain SGD step already computes). Every rule is written in the element type T, one rounding per
//! operation, fused multiply-adds where written `fma`, so the bits depend on nothing but the inputs:
//!
//! - [`Rule::Plain`] (plain SGD, today's step): `w = fma(alpha, S, w)`, alpha = -lr_t / n.
//! - [`Rule::Sgd`]: g = S * (1 / n); with decay `g = fma(lambda, w, g)`; with momentum mu
//!   `v = fma(mu, v, g)` and the step d = v, or with Nesterov d = fma(mu, v, g) (PyTorch's form);
//!   `w = fma(-lr_t, d, w)`.
//! - [`Rule::Adam`]: for AdamW first `w = fma(-lr_t lambda, w, w)` (decoupled decay); g = S * (1 / n),
//!   for Adam with decay `g = fma(lambda, w, g)`; `m = fma(beta1, m, (1 - beta1) g)`,
//!   `v = fma(beta2, v, ((1 - beta2) g) g)`; m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t) (as
//!   products with the reciprocals, computed in f64 and rounded to T once per step);
//!   `w = fma(-lr_t, m_hat / (sqrt(v_hat) + eps), w)`.
//!
//! Each state value that falls below the smallest normal number is stored as 0 ([`RuleElem::flushed`]):
//! a velocity or moment of a weight whose gradient is 0 for a while (an MNIST border pixel) decays
//! geometrically and would otherwise spend steps in the subnormal range, where x86 CPUs take about 100
//! times longer per operation; the flush is a comparison, the same on every CPU.
//!
//! sqrt and division are IEEE operations, correctly rounded on every CPU, so the rules have one result
//! everywhere. [`apply`] runs the loop compiled for the CPU's instruction set (the multiply-adds become
//! vector FMAs; the bits are the same as the portable loop's, which the tests check).

use super::{Implementation, implementation};

/// One step's rule with its coefficients for this step, in the element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule<T> {
    /// w = fma(alpha, S, w): plain SGD, alpha = -lr_t / n. No state.
    Plain { alpha: T },
    /// SGD with L2 decay and/or momentum (one state slot, the velocity v, when mu > 0).
    Sgd {
        /// 1 / n.
        inv_n: T,
        /// -lr_t.
        neg_lr: T,
        /// lambda (0: none).
        decay: T,
        /// mu (0: none).
        momentum: T,
        nesterov: bool,
    },
    /// Adam or AdamW (two state slots: m and v).
    Adam {
        inv_n: T,
        neg_lr: T,
        /// lambda added to the gradient (Adam with decay; 0 otherwise).
        decay: T,
        /// -lr_t lambda, the decoupled decay of AdamW (0 otherwise).
        decoupled: T,
        beta1: T,
        /// 1 - beta1.
        one_minus_beta1: T,
        beta2: T,
        /// 1 - beta2.
        one_minus_beta2: T,
        /// 1 / (1 - beta1^t).
        inv_correction1: T,
        /// 1 / (1 - beta2^t).
        inv_correction2: T,
        eps: T,
    },
}

impl<T: Copy + PartialEq + Default> Rule<T> {
    /// State arrays the rule keeps per parameter array (each of the parameter's shape).
    pub fn slots(&self) -> usize {
        match self {
            Rule::Plain { .. } => 0,
            Rule::Sgd { momentum, .. } => usize::from(*momentum != T::default()),
            Rule::Adam { .. } => 2,
        }
    }
}

/// The element operations the rules need.
pub trait RuleElem:
    Copy
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// self * a + b, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    /// The correctly rounded square root.
    fn root(self) -> Self;
    /// The smallest positive normal number.
    const TINY: Self;
    fn magnitude(self) -> Self;
    /// `self`, or 0 when its magnitude is below [`RuleElem::TINY`] (a subnormal): state that decays
    /// towards 0 is kept out of the subnormal range, where x86 CPUs compute about 100 times slower. A
    /// comparison and a select, the same on every CPU.
    #[inline(always)]
    fn flushed(self) -> Self {
        if self.magnitude() < Self::TINY {
            Self::default()
        } else {
            self
        }
    }
}

impl RuleElem for f32 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    #[inline(always)]
    fn root(self) -> Self {
        f32::sqrt(self)
    }
    const TINY: Self = f32::MIN_POSITIVE;
    #[inline(always)]
    fn magnitude(self) -> Self {
        self.abs()
    }
}

impl RuleElem for f64 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    #[inline(always)]
    fn root(self) -> Self {
        f64::sqrt(self)
    }
    const TINY: Self = f64::MIN_POSITIVE;
    #[inline(always)]
    fn magnitude(self) -> Self {
        self.abs()
    }
}

/// Apply `rule` to every element: `w` the parameters, `s` their summed gradients, `state` the rule's
/// slots ([`Rule::slots`] of them, each as long as `w`).
///
/// # Panics
/// If the lengths differ or a slot is missing (a programming error).
pub fn apply<T: RuleElem>(rule: &Rule<T>, w: &mut [T], s: &[T], state: &mut [&mut [T]]) {
    assert_eq!(w.len(), s.len());
    assert!(state.len() >= rule.slots() && state.iter().all(|x| x.len() == w.len()));
    match implementation() {
        // SAFETY: `implementation` chose the instruction set because the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Implementation::Avx512 => unsafe { apply_avx512(rule, w, s, state) },
        #[cfg(target_arch = "x86_64")]
        Implementation::Avx2Fma => unsafe { apply_avx2(rule, w, s, state) },
        // NEON is every aarch64 CPU's baseline: the loop is compiled with it.
        Implementation::Neon | Implementation::Portable => apply_loop(rule, w, s, state),
        #[cfg(not(target_arch = "x86_64"))]
        _ => apply_loop(rule, w, s, state),
    }
}

/// [`apply_loop`] compiled for AVX-512F (vector FMAs, square roots and divisions; the same bits).
///
/// # Safety
/// The CPU must have AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn apply_avx512<T: RuleElem>(rule: &Rule<T>, w: &mut [T], s: &[T], state: &mut [&mut [T]]) {
    apply_loop(rule, w, s, state)
}

/// [`apply_loop`] compiled for AVX2+FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2<T: RuleElem>(rule: &Rule<T>, w: &mut [T], s: &[T], state: &mut [&mut [T]]) {
    apply_loop(rule, w, s, state)
}

/// The rules of the module doc, one element at a time; the choice of rule is made once, outside the
/// loops.
#[inline(always)]
fn apply_loop<T: RuleElem>(rule: &Rule<T>, w: &mut [T], s: &[T], state: &mut [&mut [T]]) {
    let zero = T::default();
    match *rule {
        Rule::Plain { alpha } => {
            for (w, &s) in w.iter_mut().zip(s) {
                *w = alpha.fma(s, *w);
            }
        }
        Rule::Sgd {
            inv_n,
            neg_lr,
            decay,
            momentum,
            nesterov,
        } => {
            let grad = |w: T, s: T| {
                let g = s * inv_n;
                if decay == zero { g } else { decay.fma(w, g) }
            };
            if momentum == zero {
                for (w, &s) in w.iter_mut().zip(s) {
                    *w = neg_lr.fma(grad(*w, s), *w);
                }
            } else {
                let v = &mut *state[0];
                for ((w, &s), v) in w.iter_mut().zip(s).zip(v.iter_mut()) {
                    let g = grad(*w, s);
                    *v = momentum.fma(*v, g).flushed();
                    let d = if nesterov { momentum.fma(*v, g) } else { *v };
                    *w = neg_lr.fma(d, *w);
                }
            }
        }
        Rule::Adam {
            inv_n,
            neg_lr,
            decay,
            decoupled,
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            inv_correction1,
            inv_correction2,
            eps,
        } => {
            let (m, rest) = state.split_at_mut(1);
            let (m, v) = (&mut *m[0], &mut *rest[0]);
            for (((w, &s), m), v) in w.iter_mut().zip(s).zip(m.iter_mut()).zip(v.iter_mut()) {
                let mut x = *w;
                if decoupled != zero {
                    x = decoupled.fma(x, x);
                }
                let mut g = s * inv_n;
                if decay != zero {
                    g = decay.fma(x, g);
                }
                *m = beta1.fma(*m, one_minus_beta1 * g).flushed();
                *v = beta2.fma(*v, (one_minus_beta2 * g) * g).flushed();
                let m_hat = *m * inv_correction1;
                let v_hat = *v * inv_correction2;
                *w = neg_lr.fma(m_hat / (v_hat.root() + eps), x);
            }
        }
    }
}

/// The portable loop, for the tests that compare the compiled paths with it.
#[cfg(test)]
pub(crate) fn apply_portable<T: RuleElem>(
    rule: &Rule<T>,
    w: &mut [T],
    s: &[T],
    state: &mut [&mut [T]],
) {
    apply_loop(rule, w, s, state)
}
