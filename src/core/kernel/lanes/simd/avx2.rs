//! AVX2+FMA intrinsics: the same contract in 256-bit registers, so one contract vector of L lanes is a
//! pair of registers (lanes 0..L/2 and L/2..L) for both types; tails by masked loads, as on AVX-512.
//!
//! With 16 registers (not 32), the tiles are smaller than on AVX-512: [`abt`] keeps 3 rows of W by 2
//! rows of A in flight (12 accumulators, loading 10 registers per 12 multiply-adds; 3 rows of W rather
//! than 2 by 3 of A, so that the operand streamed from L2 is loaded less often), [`combine`] 6 output
//! rows by 2 registers of columns (12 accumulators, 2 loads and 6 broadcasts per 12; 4 by 3 leaves one
//! accumulator spilled, a store-to-load round trip on its chain at every term), walked in bands of rows
//! ([`BAND_ROWS`]). The portable code compiled for AVX2 cannot stand in for this: its 5 x 4 tile of
//! L-lane arrays needs 40 registers of accumulators and spills on every multiply-add.

use std::arch::x86_64::*;

use crate::core::kernel::lanes::{Coef, Epilogue, Lane, Mat, Out, abt_walk};

/// Rows of W and of A per tile of [`abt`].
const TILE_W: usize = 3;
const TILE_A: usize = 2;
/// Rows of A per outer block of [`abt`]: about 200 KB of A, so that a block stays in a 512 KB L2
/// (Zen 3's) while W passes by.
const A_BLOCK_BYTES: usize = 200 * 1024;
/// Output rows and registers of columns per tile of [`combine`].
const COMB_R: usize = 6;
const COMB_V: usize = 2;
/// Output rows per tile at the lower edge of [`combine`] (then single rows).
const COMB_EDGE: usize = 3;
/// [`combine`] walks its output in bands of rows, each band column block by column block: with many
/// terms (the update at batch 128), bands of 48 rows, so that a column block of the terms' rows
/// stays in L1 while the band's tiles pass and the band of W (150 KB in f32) stays in L2 while the
/// column blocks pass; with few terms (batch 10), bands of one tile, so that W's rows stream in
/// order (the choice was measured with `runner bench --kernels`; see the changelog).
const BAND_ROWS: usize = 48;
const BAND_MIN_TERMS: usize = 32;

/// `-1` in the first 8 lanes, then 0: a load at `8 - width` is the mask of the first `width` i32
/// lanes (f32), and at `2 * (4 - width)` of the first `width` i64 lanes (f64).
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// One 256-bit register of an element type and the operations the kernels use on it.
pub trait Simd2: Lane {
    type R: Copy;
    /// Values per register: L / 2.
    const HALF: usize;
    /// # Safety
    /// AVX2+FMA code only (as every method here).
    unsafe fn zero() -> Self::R;
    /// # Safety
    /// `p` valid for HALF reads.
    unsafe fn loadu(p: *const Self) -> Self::R;
    /// The first `width` (< HALF) values at `p`, the rest 0.
    ///
    /// # Safety
    /// `p` valid for `width` reads.
    unsafe fn load_first(p: *const Self, width: usize) -> Self::R;
    /// # Safety
    /// `p` valid for HALF writes.
    unsafe fn storeu(p: *mut Self, v: Self::R);
    /// Store the first `width` (< HALF) values.
    ///
    /// # Safety
    /// `p` valid for `width` writes.
    unsafe fn store_first(p: *mut Self, width: usize, v: Self::R);
    /// # Safety
    /// AVX2+FMA code only.
    unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    /// # Safety
    /// AVX2+FMA code only.
    unsafe fn set1(x: Self) -> Self::R;
    /// The contract's tree over the L lanes of a pair of registers (lanes 0..HALF in `lo`).
    ///
    /// # Safety
    /// AVX2+FMA code only.
    unsafe fn tree_sum(lo: Self::R, hi: Self::R) -> Self;
}

/// The methods of [`Simd2`] that are one intrinsic each: for element type `$t` and register `$r`, the
/// intrinsics that zero, load, store, multiply-add and broadcast.
macro_rules! one_instruction_ops {
    ($t:ty, $r:ty: $zero:ident, $loadu:ident, $storeu:ident, $fmadd:ident, $set1:ident) => {
        #[inline(always)]
        unsafe fn zero() -> $r {
            unsafe { $zero() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const $t) -> $r {
            unsafe { $loadu(p) }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut $t, v: $r) {
            unsafe { $storeu(p, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: $r, b: $r, c: $r) -> $r {
            unsafe { $fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: $t) -> $r {
            unsafe { $set1(x) }
        }
    };
}

impl Simd2 for f32 {
    type R = __m256;
    const HALF: usize = 8;
    one_instruction_ops!(f32, __m256: _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps, _mm256_set1_ps);
    #[inline(always)]
    unsafe fn load_first(p: *const f32, width: usize) -> __m256 {
        unsafe {
            let m = _mm256_loadu_si256(MASKS.as_ptr().add(8 - width).cast());
            _mm256_maskload_ps(p, m)
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, width: usize, v: __m256) {
        unsafe {
            let m = _mm256_loadu_si256(MASKS.as_ptr().add(8 - width).cast());
            _mm256_maskstore_ps(p, m, v)
        }
    }
    /// l + (l+8) across the pair, then + 4 across the halves of 128 bits, + 2, + 1.
    #[inline(always)]
    unsafe fn tree_sum(lo: __m256, hi: __m256) -> f32 {
        unsafe {
            let h8 = _mm256_add_ps(lo, hi);
            let h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps::<1>(h8));
            let h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
            let h1 = _mm_add_ss(h2, _mm_shuffle_ps::<0b01>(h2, h2));
            _mm_cvtss_f32(h1)
        }
    }
}

impl Simd2 for f64 {
    type R = __m256d;
    const HALF: usize = 4;
    one_instruction_ops!(f64, __m256d: _mm256_setzero_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_fmadd_pd, _mm256_set1_pd);
    #[inline(always)]
    unsafe fn load_first(p: *const f64, width: usize) -> __m256d {
        unsafe {
            let m = _mm256_loadu_si256(MASKS.as_ptr().add(2 * (4 - width)).cast());
            _mm256_maskload_pd(p, m)
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f64, width: usize, v: __m256d) {
        unsafe {
            let m = _mm256_loadu_si256(MASKS.as_ptr().add(2 * (4 - width)).cast());
            _mm256_maskstore_pd(p, m, v)
        }
    }
    /// l + (l+4) across the pair, then + 2 across the halves of 128 bits, + 1.
    #[inline(always)]
    unsafe fn tree_sum(lo: __m256d, hi: __m256d) -> f64 {
        unsafe {
            let h4 = _mm256_add_pd(lo, hi);
            let h2 = _mm_add_pd(_mm256_castpd256_pd128(h4), _mm256_extractf128_pd::<1>(h4));
            let h1 = _mm_add_sd(h2, _mm_unpackhi_pd(h2, h2));
            _mm_cvtsd_f64(h1)
        }
    }
}

/// acc[r] = fma(av, wv[r], acc[r]) for each of the R rows of W.
#[inline(always)]
fn fma_row<T: Simd2, const R: usize>(acc: [T::R; R], wv: &[T::R; R], av: T::R) -> [T::R; R] {
    // SAFETY: only reached from AVX2+FMA code.
    std::array::from_fn(|r| unsafe { T::fmadd(av, wv[r], acc[r]) })
}

/// R rows of W (from `w`) against S rows of A (from `a`), results to z (row stride `ldz`).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold S rows of `k` values at stride `lda`, `w` R rows
/// of `k` values at stride `ldw`, and `z` S rows of R writable values at stride `ldz`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<T: Simd2, const R: usize, const S: usize>(
    k: usize,
    a: *const T,
    lda: usize,
    w: *const T,
    ldw: usize,
    z: *mut T,
    ldz: usize,
) {
    const { assert!(S <= 3, "tiles have at most 3 rows of A") };
    let (lanes, half) = (T::LANES, T::HALF);
    unsafe {
        // lo: lanes 0..HALF of each accumulator, hi: lanes HALF..L.
        let mut lo = [[T::zero(); R]; S];
        let mut hi = [[T::zero(); R]; S];
        let full = k / lanes;
        for c in 0..full {
            let at = c * lanes;
            let wv: [T::R; R] = std::array::from_fn(|r| T::loadu(w.add(r * ldw + at)));
            rows_of_a!(lo, wv, |s| T::loadu(a.add(s * lda + at)));
            let at = at + half;
            let wv: [T::R; R] = std::array::from_fn(|r| T::loadu(w.add(r * ldw + at)));
            rows_of_a!(hi, wv, |s| T::loadu(a.add(s * lda + at)));
        }
        let rest = k - full * lanes;
        if rest > 0 {
            // A masked-off lane adds fma(0, 0, acc) = acc, as the contract's shorter lanes do.
            let at = full * lanes;
            let load = |p: *const T, width: usize| {
                if width >= half {
                    T::loadu(p)
                } else {
                    T::load_first(p, width)
                }
            };
            let wv: [T::R; R] = std::array::from_fn(|r| load(w.add(r * ldw + at), rest));
            rows_of_a!(lo, wv, |s| load(a.add(s * lda + at), rest));
            if rest > half {
                let (at, width) = (at + half, rest - half);
                let wv: [T::R; R] = std::array::from_fn(|r| load(w.add(r * ldw + at), width));
                rows_of_a!(hi, wv, |s| load(a.add(s * lda + at), width));
            }
        }
        for s in 0..S {
            for r in 0..R {
                *z.add(s * ldz + r) = <T as Simd2>::tree_sum(lo[s][r], hi[s][r]);
            }
        }
    }
}

/// A tile of R rows of W against `s` (1 or 2) rows of A.
///
/// # Safety
/// As for [`tile`], with S = `s`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_edge<T: Simd2, const R: usize>(
    s: usize,
    k: usize,
    a: *const T,
    lda: usize,
    w: *const T,
    ldw: usize,
    z: *mut T,
    ldz: usize,
) {
    type Tile<T> = unsafe fn(usize, *const T, usize, *const T, usize, *mut T, usize);
    let f: Tile<T> = match s {
        1 => tile::<T, R, 1>,
        _ => tile::<T, R, TILE_A>,
    };
    // Through an opaque pointer, so that each tile shape gets its registers allocated on its own.
    // SAFETY: passed on from the caller.
    unsafe { std::hint::black_box(f)(k, a, lda, w, ldw, z, ldz) }
}

/// # Safety
/// The CPU has AVX2 and FMA; z is valid for writes at i * ldz + j for i < a.rows, j < w.rows.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn abt<T: Simd2>(a: Mat<'_, T>, w: Mat<'_, T>, zp: *mut T, ldz: usize) {
    let k = a.cols;
    let (ap, wp) = (a.data.as_ptr(), w.data.as_ptr());
    let row_bytes = (k * std::mem::size_of::<T>()).max(1);
    let a_block = (A_BLOCK_BYTES / row_bytes / TILE_A).max(1) * TILE_A;
    for (i, s, j, r) in abt_walk(a.rows, w.rows, TILE_W, TILE_A, a_block) {
        // SAFETY: rows i..i+s of A, j..j+r of W and the z block are in bounds (`lanes::abt`).
        unsafe {
            let (a0, w0, z0) = (ap.add(i * a.ld), wp.add(j * w.ld), zp.add(i * ldz + j));
            match r {
                TILE_W => tile_edge::<T, TILE_W>(s, k, a0, a.ld, w0, w.ld, z0, ldz),
                2 => tile_edge::<T, 2>(s, k, a0, a.ld, w0, w.ld, z0, ldz),
                _ => tile_edge::<T, 1>(s, k, a0, a.ld, w0, w.ld, z0, ldz),
            }
        }
    }
}

/// R output rows from r0 by V registers of columns from c0; with `width` < HALF, one register of
/// which only the first `width` columns are read and written (V must then be 1).
///
/// # Safety
/// The CPU must support AVX2 and FMA; rows r0..r0+R and the columns must lie inside `out` (row
/// stride `ldo`) and inside `coef` and `src` as `combine` checked them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn comb_tile<T: Simd2, const R: usize, const V: usize>(
    coef: &Coef<'_, T>,
    src: &Mat<'_, T>,
    out: *mut T,
    ldo: usize,
    r0: usize,
    c0: usize,
    width: usize,
    epilogue: Epilogue<T>,
) {
    let half = T::HALF;
    let part = width < half;
    unsafe {
        let load = |p: *const T| {
            if part {
                T::load_first(p, width)
            } else {
                T::loadu(p)
            }
        };
        let (cp, sp) = (coef.data.as_ptr(), src.data.as_ptr());
        let mut acc = [[T::zero(); V]; R];
        for t in 0..src.rows {
            let row = sp.add(t * src.ld + c0);
            let sv: [T::R; V] = std::array::from_fn(|v| load(row.add(v * half)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let cf = T::set1(*cp.add((r0 + r) * coef.row_stride + t * coef.term_stride));
                for (x, s) in acc_r.iter_mut().zip(&sv) {
                    *x = T::fmadd(cf, *s, *x);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, g) in acc_r.iter().enumerate() {
                let p = out.add((r0 + r) * ldo + c0 + v * half);
                let value = match epilogue {
                    Epilogue::Assign => *g,
                    Epilogue::Axpy(alpha) => T::fmadd(T::set1(alpha), *g, load(p)),
                };
                if part {
                    T::store_first(p, width, value);
                } else {
                    T::storeu(p, value);
                }
            }
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; out is valid for reads and writes over its rows x cols.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn combine<T: Simd2>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: Out<T>,
    epilogue: Epilogue<T>,
) {
    let half = T::HALF;
    let (rows, cols, ldo, op) = (out.rows, out.cols, out.ld, out.ptr);
    let band = if src.rows >= BAND_MIN_TERMS {
        BAND_ROWS
    } else {
        COMB_R
    };
    let mut b0 = 0;
    while b0 < rows {
        let b_end = (b0 + band).min(rows);
        let mut c0 = 0;
        while c0 < cols {
            let left = cols - c0;
            let (vecs, width) = if left >= COMB_V * half {
                (COMB_V, half)
            } else {
                (1, left.min(half))
            };
            let wide = vecs == COMB_V;
            let mut r = b0;
            while r < b_end {
                let left = b_end - r;
                let tile_rows = if left >= COMB_R {
                    COMB_R
                } else if left >= COMB_EDGE {
                    COMB_EDGE
                } else {
                    1
                };
                // SAFETY: rows r..r+tile_rows and columns c0..c0+vecs*width are in bounds
                // (`lanes::combine`); a partial register touches only its first `width` columns.
                unsafe {
                    let (c, s, e) = (&coef, &src, epilogue);
                    match (tile_rows, wide) {
                        (COMB_R, true) => {
                            comb_tile::<T, COMB_R, COMB_V>(c, s, op, ldo, r, c0, width, e)
                        }
                        (COMB_R, false) => {
                            comb_tile::<T, COMB_R, 1>(c, s, op, ldo, r, c0, width, e)
                        }
                        (COMB_EDGE, true) => {
                            comb_tile::<T, COMB_EDGE, COMB_V>(c, s, op, ldo, r, c0, width, e)
                        }
                        (COMB_EDGE, false) => {
                            comb_tile::<T, COMB_EDGE, 1>(c, s, op, ldo, r, c0, width, e)
                        }
                        (_, true) => comb_tile::<T, 1, COMB_V>(c, s, op, ldo, r, c0, width, e),
                        (_, false) => comb_tile::<T, 1, 1>(c, s, op, ldo, r, c0, width, e),
                    }
                }
                r += tile_rows;
            }
            c0 += vecs * width;
        }
        b0 = b_end;
    }
}
