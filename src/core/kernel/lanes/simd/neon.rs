//! NEON (aarch64) intrinsics: the register type of each element (4 f32 or 2 f64 in a 128-bit register)
//! for the chain kernels' forward tiles (`chain::neon`), and [`combine`] (the update and the backward
//! product) with tiles of up to 4 output rows by 4 registers. Every multiply-add is one `fmla` (fused,
//! rounded once), every output element one chain over t in increasing order from +0: the bits of the
//! portable, AVX2+FMA and AVX-512 paths.

use std::arch::aarch64::*;

use crate::core::kernel::lanes::{Coef, Epilogue, Lane, Mat, Out};

/// One 128-bit NEON register of an element type and the operations the kernels use on it.
///
/// Every method is `unsafe` because a pointer argument must be valid for the reads or writes it names
/// (NEON itself is part of every aarch64 CPU).
pub trait Neon: Lane {
    type R: Copy;
    /// Values per register: 4 f32, 2 f64.
    const LEN: usize;
    /// # Safety
    /// None beyond the trait's.
    unsafe fn zero() -> Self::R;
    /// # Safety
    /// `p` valid for LEN reads.
    unsafe fn load(p: *const Self) -> Self::R;
    /// a * b + c, rounded once.
    ///
    /// # Safety
    /// None beyond the trait's.
    unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    /// `x` in every value.
    ///
    /// # Safety
    /// None beyond the trait's.
    unsafe fn splat(x: Self) -> Self::R;
    /// # Safety
    /// `p` valid for LEN writes.
    unsafe fn store(p: *mut Self, v: Self::R);
}

/// [`Neon`] for element type `$t` in register `$r` of `$len` values, by its intrinsics: broadcast,
/// load, fused multiply-add (`$fma(c, a, b)` = c + a * b, rounded once: FMLA) and store.
macro_rules! neon_ops {
    ($t:ty, $r:ty, $len:literal: $dup:ident, $load:ident, $fma:ident, $store:ident) => {
        impl Neon for $t {
            type R = $r;
            const LEN: usize = $len;
            #[inline(always)]
            unsafe fn zero() -> $r {
                unsafe { $dup(0.0) }
            }
            #[inline(always)]
            unsafe fn load(p: *const $t) -> $r {
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn fmadd(a: $r, b: $r, c: $r) -> $r {
                unsafe { $fma(c, a, b) }
            }
            #[inline(always)]
            unsafe fn splat(x: $t) -> $r {
                unsafe { $dup(x) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut $t, v: $r) {
                unsafe { $store(p, v) }
            }
        }
    };
}

neon_ops!(f32, float32x4_t, 4: vdupq_n_f32, vld1q_f32, vfmaq_f32, vst1q_f32);
neon_ops!(f64, float64x2_t, 2: vdupq_n_f64, vld1q_f64, vfmaq_f64, vst1q_f64);

/// Output rows per tile of [`combine`] (by [`VECS`] registers: 16 accumulators of 32 registers).
const ROWS: usize = 4;
/// Registers of columns per wide tile of [`combine`].
const VECS: usize = 4;

/// `out[r][c] = epilogue(chain over t of coef(r, t) src[t][c])`: tiles of up to [`ROWS`] rows by
/// [`VECS`] registers (then by one register), and the columns left over (fewer than a register) one
/// element at a time with the same chain in scalar `fma`s.
///
/// # Safety
/// `out` valid for reads and writes over its rows x cols; `coef` and `src` hold every term read (the
/// callers assert it).
pub unsafe fn combine<T: Neon>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: Out<T>,
    epilogue: Epilogue<T>,
) {
    let (rows, cols) = (out.rows, out.cols);
    let mut c0 = 0;
    while c0 + T::LEN <= cols {
        let wide = cols - c0 >= VECS * T::LEN;
        let mut r = 0;
        while r < rows {
            let s = (rows - r).min(ROWS);
            let f = std::hint::black_box(pick::<T>(s, wide));
            // SAFETY: rows r..r+s and columns c0..c0 + (VECS or 1) * LEN are inside out.
            unsafe { f(&coef, &src, out, r, c0, epilogue) };
            r += s;
        }
        c0 += if wide { VECS * T::LEN } else { T::LEN };
    }
    for c in c0..cols {
        for r in 0..rows {
            let mut g = T::default();
            for t in 0..src.rows {
                let cf = coef.data[r * coef.row_stride + t * coef.term_stride];
                g = cf.mul_add(src.data[t * src.ld + c], g);
            }
            // SAFETY: r < rows, c < cols.
            let x = unsafe { &mut *out.ptr.add(r * out.ld + c) };
            *x = match epilogue {
                Epilogue::Assign => g,
                Epilogue::Axpy(alpha) => alpha.mul_add(g, *x),
            };
        }
    }
}

type Tile<T> = unsafe fn(&Coef<'_, T>, &Mat<'_, T>, Out<T>, usize, usize, Epilogue<T>);

/// The tile of `s` rows (1 to [`ROWS`]), [`VECS`] registers wide or one.
fn pick<T: Neon>(s: usize, wide: bool) -> Tile<T> {
    match (s, wide) {
        (1, true) => comb_tile::<T, 1, VECS>,
        (2, true) => comb_tile::<T, 2, VECS>,
        (3, true) => comb_tile::<T, 3, VECS>,
        (_, true) => comb_tile::<T, ROWS, VECS>,
        (1, false) => comb_tile::<T, 1, 1>,
        (2, false) => comb_tile::<T, 2, 1>,
        (3, false) => comb_tile::<T, 3, 1>,
        (_, false) => comb_tile::<T, ROWS, 1>,
    }
}

/// R output rows from r0 by V registers from column c0: for each term t, V registers of src's row t
/// against coef(r, t) broadcast, one accumulator chain per register and row; then the epilogue.
///
/// # Safety
/// As [`combine`], with rows r0..r0+R and columns c0..c0 + V * LEN inside out.
unsafe fn comb_tile<T: Neon, const R: usize, const V: usize>(
    coef: &Coef<'_, T>,
    src: &Mat<'_, T>,
    out: Out<T>,
    r0: usize,
    c0: usize,
    epilogue: Epilogue<T>,
) {
    unsafe {
        let (cp, sp) = (coef.data.as_ptr(), src.data.as_ptr());
        let mut acc = [[T::zero(); V]; R];
        for t in 0..src.rows {
            let row = sp.add(t * src.ld + c0);
            let sv: [T::R; V] = std::array::from_fn(|v| T::load(row.add(v * T::LEN)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let cf = T::splat(*cp.add((r0 + r) * coef.row_stride + t * coef.term_stride));
                for (x, s) in acc_r.iter_mut().zip(&sv) {
                    *x = T::fmadd(cf, *s, *x);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, g) in acc_r.iter().enumerate() {
                let p = out.ptr.add((r0 + r) * out.ld + c0 + v * T::LEN);
                let x = match epilogue {
                    Epilogue::Assign => *g,
                    Epilogue::Axpy(alpha) => T::fmadd(T::splat(alpha), *g, T::load(p)),
                };
                T::store(p, x);
            }
        }
    }
}
