//! The implementations of the lanes contract per instruction set: [`portable`] (L-lane arrays and
//! `mul_add`, any CPU), and on x86-64 [`avx512`] (one register per contract vector) and [`avx2`] (a pair
//! of 256-bit registers per contract vector), and on aarch64 [`neon`] (the chain contract's `combine`
//! and register type; its Z = A W^T of the lanes contract is the portable code). Each computes exactly the contract of [`super`] (the
//! lanes module);
//! the choice among them is [`crate::core::kernel::implementation`]'s. The chain contract's own tiles use these
//! modules' vector traits.

#[cfg(target_arch = "x86_64")]
/// `$acc[s] = fma_row::<T, R>($acc[s], &$wv, $load)` for each row s < S of a dot tile, `$load` reading
/// row `$s` of A (at most 4 rows; `T`, `R`, `S` and `fma_row` are the caller's). The rows are unrolled by
/// hand: LLVM keeps the R x S accumulators in registers only when no loop indexes them (a rolled loop
/// over s spilled them to the stack at every step, on AVX-512 and on AVX2).
macro_rules! rows_of_a {
    ($acc:ident, $wv:ident, |$s:ident| $load:expr) => {{
        if S > 0 {
            let $s = 0;
            $acc[0] = fma_row::<T, R>($acc[0], &$wv, $load);
        }
        if S > 1 {
            let $s = 1;
            $acc[1] = fma_row::<T, R>($acc[1], &$wv, $load);
        }
        if S > 2 {
            let $s = 2;
            $acc[2] = fma_row::<T, R>($acc[2], &$wv, $load);
        }
        if S > 3 {
            let $s = 3;
            $acc[3] = fma_row::<T, R>($acc[3], &$wv, $load);
        }
    }};
}

pub(crate) mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
