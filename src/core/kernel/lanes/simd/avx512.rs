//! AVX-512F intrinsics: the same contract, L lanes in one register, tails by masked loads (a masked-off
//! lane adds fma(0, 0, acc) = acc: an accumulator that starts at +0 is never -0).

use std::arch::x86_64::*;

use crate::core::kernel::lanes::{
    COMB_ROWS, COMB_VECS, Coef, Epilogue, Lane, Mat, Out, ROWS_A, ROWS_W, abt_tiles,
};

/// Rows of W per tile of [`abt`]: 4, so that the trees of a tile's accumulators are summed L at a
/// time ([`Simd::tree_sums`]; 4 rows of A by 4 of W is one f32 group, two f64 groups) instead of one
/// register at a time (4 shuffles and 4 additions for each of 20 accumulators in 5 x 4 tiles). The
/// same bits. They help tall products and not short ones or a W of few rows (whose edge falls to
/// one-row tiles), so only products with at least [`GROUPED_MIN`] rows of A and of W take them; the
/// rest keep 5 rows of W by 4 of A (measurements in the changelog).
const GROUP_COLS: usize = 4;
const GROUPED_MIN: usize = 32;

/// One 512-bit register of an element type and the operations the kernels use on it.
pub trait Simd: Lane {
    type R: Copy;
    type M: Copy;
    /// # Safety
    /// AVX-512F code only (as every method here).
    unsafe fn zero() -> Self::R;
    /// # Safety
    /// `p` valid for L reads.
    unsafe fn loadu(p: *const Self) -> Self::R;
    /// # Safety
    /// `p` valid for reads of the lanes `m` selects.
    unsafe fn maskz_loadu(m: Self::M, p: *const Self) -> Self::R;
    /// # Safety
    /// AVX-512F code only.
    unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    /// # Safety
    /// AVX-512F code only.
    unsafe fn set1(x: Self) -> Self::R;
    /// # Safety
    /// `p` valid for L writes.
    unsafe fn storeu(p: *mut Self, v: Self::R);
    /// # Safety
    /// `p` valid for writes of the lanes `m` selects.
    unsafe fn mask_storeu(p: *mut Self, m: Self::M, v: Self::R);
    /// The contract's tree over the register, in lane 0. Only 512-bit operations: 128- and 256-bit
    /// ones (VEX-encoded without AVX-512VL) can only use registers 0-15, which made LLVM spill a
    /// tile's accumulators to the stack to keep them there for the final sums.
    ///
    /// # Safety
    /// AVX-512F code only.
    unsafe fn tree_sum(v: Self::R) -> Self;
    /// The first `width` lanes (all when `width` >= L).
    fn mask(width: usize) -> Self::M;
    /// The contract's tree over each of L registers at once, by shuffles between pairs of them: one
    /// register of L sums, the sum of `v[Self::slot(p)]` in lane p. Each addition is one the tree
    /// over a single register makes (the same pairs, only computed L at a time), so the bits are those
    /// of [`Simd::tree_sum`] on each.
    ///
    /// # Safety
    /// AVX-512F code only.
    unsafe fn tree_sums(v: &[Self::R; 16]) -> Self::R;
    /// Which register of [`Simd::tree_sums`] lane p sums.
    fn slot(p: usize) -> usize;
    /// The lanes `lo..lo + 4`.
    fn mask4(lo: usize) -> Self::M;
}

/// The methods of [`Simd`] that are one intrinsic each: for element type `$t`, register `$r` and mask
/// `$m`, the intrinsics that zero, load, load masked, multiply-add, broadcast, store and store masked.
macro_rules! one_instruction_ops {
    ($t:ty, $r:ty, $m:ty: $zero:ident, $loadu:ident, $maskz_loadu:ident, $fmadd:ident, $set1:ident,
     $storeu:ident, $mask_storeu:ident) => {
        type R = $r;
        type M = $m;
        #[inline(always)]
        unsafe fn zero() -> $r {
            unsafe { $zero() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const $t) -> $r {
            unsafe { $loadu(p) }
        }
        #[inline(always)]
        unsafe fn maskz_loadu(m: $m, p: *const $t) -> $r {
            unsafe { $maskz_loadu(m, p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: $r, b: $r, c: $r) -> $r {
            unsafe { $fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: $t) -> $r {
            unsafe { $set1(x) }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut $t, v: $r) {
            unsafe { $storeu(p, v) }
        }
        #[inline(always)]
        unsafe fn mask_storeu(p: *mut $t, m: $m, v: $r) {
            unsafe { $mask_storeu(p, m, v) }
        }
    };
}

impl Simd for f32 {
    one_instruction_ops!(f32, __m512, __mmask16: _mm512_setzero_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_storeu_ps, _mm512_mask_storeu_ps);
    /// l + (l+8), + 4, + 2, + 1.
    #[inline(always)]
    unsafe fn tree_sum(v: __m512) -> f32 {
        unsafe {
            let h8 = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v));
            let h4 = _mm512_add_ps(h8, _mm512_shuffle_f32x4::<0b10_11_00_01>(h8, h8));
            let h2 = _mm512_add_ps(h4, _mm512_shuffle_ps::<0b01_00_11_10>(h4, h4));
            let h1 = _mm512_add_ps(h2, _mm512_shuffle_ps::<0b10_11_00_01>(h2, h2));
            _mm512_cvtss_f32(h1)
        }
    }
    fn mask(width: usize) -> __mmask16 {
        if width >= 16 {
            0xffff
        } else {
            ((1u32 << width) - 1) as __mmask16
        }
    }
    /// Four levels over 16 registers: halves of 256 bits (8 pairs), of 128 (4 pairs), then pairs
    /// and neighbours within 128 bits. Lane 4c + e ends with register 4e + c.
    #[inline(always)]
    unsafe fn tree_sums(v: &[__m512; 16]) -> __m512 {
        unsafe {
            let l1: [__m512; 8] = std::array::from_fn(|i| {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0x44>(a, b),
                    _mm512_shuffle_f32x4::<0xEE>(a, b),
                )
            });
            let l2: [__m512; 4] = std::array::from_fn(|i| {
                let (a, b) = (l1[2 * i], l1[2 * i + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0x88>(a, b),
                    _mm512_shuffle_f32x4::<0xDD>(a, b),
                )
            });
            let l3: [__m512; 2] = std::array::from_fn(|i| {
                let (a, b) = (l2[2 * i], l2[2 * i + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_ps::<0x44>(a, b),
                    _mm512_shuffle_ps::<0xEE>(a, b),
                )
            });
            let (a, b) = (l3[0], l3[1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(a, b),
                _mm512_shuffle_ps::<0xDD>(a, b),
            )
        }
    }
    fn slot(p: usize) -> usize {
        4 * (p % 4) + p / 4
    }
    fn mask4(lo: usize) -> __mmask16 {
        (0xf << lo) as __mmask16
    }
}

impl Simd for f64 {
    one_instruction_ops!(f64, __m512d, __mmask8: _mm512_setzero_pd, _mm512_loadu_pd, _mm512_maskz_loadu_pd, _mm512_fmadd_pd, _mm512_set1_pd, _mm512_storeu_pd, _mm512_mask_storeu_pd);
    /// l + (l+4), + 2, + 1: halves of 256 bits, then of 128, then neighbours.
    #[inline(always)]
    unsafe fn tree_sum(v: __m512d) -> f64 {
        unsafe {
            let h4 = _mm512_add_pd(v, _mm512_shuffle_f64x2::<0b01_00_11_10>(v, v));
            let h2 = _mm512_add_pd(h4, _mm512_shuffle_f64x2::<0b10_11_00_01>(h4, h4));
            let h1 = _mm512_add_pd(h2, _mm512_shuffle_pd::<0b0101_0101>(h2, h2));
            _mm512_cvtsd_f64(h1)
        }
    }
    fn mask(width: usize) -> __mmask8 {
        if width >= 8 {
            0xff
        } else {
            ((1u32 << width) - 1) as __mmask8
        }
    }
    /// Three levels over the first 8 registers: halves of 256 bits (4 pairs), of 128 (2 pairs),
    /// then neighbours. Lane 2c + e ends with register 4e + c.
    #[inline(always)]
    unsafe fn tree_sums(v: &[__m512d; 16]) -> __m512d {
        unsafe {
            let l1: [__m512d; 4] = std::array::from_fn(|i| {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                _mm512_add_pd(
                    _mm512_shuffle_f64x2::<0x44>(a, b),
                    _mm512_shuffle_f64x2::<0xEE>(a, b),
                )
            });
            let l2: [__m512d; 2] = std::array::from_fn(|i| {
                let (a, b) = (l1[2 * i], l1[2 * i + 1]);
                _mm512_add_pd(
                    _mm512_shuffle_f64x2::<0x88>(a, b),
                    _mm512_shuffle_f64x2::<0xDD>(a, b),
                )
            });
            let (a, b) = (l2[0], l2[1]);
            _mm512_add_pd(
                _mm512_shuffle_pd::<0x00>(a, b),
                _mm512_shuffle_pd::<0xFF>(a, b),
            )
        }
    }
    fn slot(p: usize) -> usize {
        4 * (p % 2) + p / 2
    }
    fn mask4(lo: usize) -> __mmask8 {
        (0xf << lo) as __mmask8
    }
}

/// R rows of W (from `w`) against S rows of A (from `a`), results to z (row stride `ldz`).
///
/// # Safety
/// The CPU must support AVX-512F; `a` must hold S rows of `k` values at stride `lda`, `w` R rows of
/// `k` values at stride `ldw`, and `z` S rows of R writable values at stride `ldz`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<T: Simd, const R: usize, const S: usize>(
    k: usize,
    a: *const T,
    lda: usize,
    w: *const T,
    ldw: usize,
    z: *mut T,
    ldz: usize,
) {
    const { assert!(S <= 4, "tiles have at most 4 rows of A") };
    let lanes = T::LANES;
    unsafe {
        let mut acc = [[T::zero(); R]; S];
        let full = k / lanes;
        for c in 0..full {
            let mut wv = [T::zero(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = T::loadu(w.add(r * ldw + c * lanes));
            }
            rows_of_a!(acc, wv, |s| T::loadu(a.add(s * lda + c * lanes)));
        }
        let rest = k - full * lanes;
        if rest > 0 {
            let m = T::mask(rest);
            let mut wv = [T::zero(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = T::maskz_loadu(m, w.add(r * ldw + full * lanes));
            }
            rows_of_a!(acc, wv, |s| T::maskz_loadu(
                m,
                a.add(s * lda + full * lanes)
            ));
        }
        if R == GROUP_COLS {
            // The trees of L accumulators at once (L / 4 rows of A by the 4 rows of W), each
            // row's 4 sums stored by one masked store: lane p of a group is z[s][p % 4] for
            // s = g + p / 4, from base z[g] shifted back by 4 (p / 4) lanes.
            let rows_per_group = lanes / GROUP_COLS;
            let mut g = 0;
            while g < S {
                let mut v = [T::zero(); 16];
                for p in 0..lanes {
                    let (s, r) = (g + p / GROUP_COLS, p % GROUP_COLS);
                    if s < S {
                        v[T::slot(p)] = acc[s][r];
                    }
                }
                let sums = T::tree_sums(&v);
                for sl in 0..rows_per_group.min(S - g) {
                    let base = z.wrapping_add((g + sl) * ldz).wrapping_sub(GROUP_COLS * sl);
                    T::mask_storeu(base, T::mask4(GROUP_COLS * sl), sums);
                }
                g += rows_per_group;
            }
        } else {
            for (s, acc_s) in acc.iter().enumerate() {
                for (r, x) in acc_s.iter().enumerate() {
                    *z.add(s * ldz + r) = <T as Simd>::tree_sum(*x);
                }
            }
        }
    }
}

/// acc[r] = fma(av, wv[r], acc[r]) for each of the R rows of W.
#[inline(always)]
fn fma_row<T: Simd, const R: usize>(acc: [T::R; R], wv: &[T::R; R], av: T::R) -> [T::R; R] {
    // SAFETY: only reached from AVX-512F code.
    std::array::from_fn(|r| unsafe { T::fmadd(av, wv[r], acc[r]) })
}

/// A tile of R rows of W against `s` (1 to 4) rows of A.
///
/// # Safety
/// As for [`tile`], with S = `s`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_edge<T: Simd, const R: usize>(
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
        2 => tile::<T, R, 2>,
        3 => tile::<T, R, 3>,
        _ => tile::<T, R, ROWS_A>,
    };
    // Called through an opaque pointer so that each tile shape is compiled, and its registers
    // allocated, on its own: inlined together, LLVM spilled the accumulators of the 5 x 4 tile.
    // SAFETY: passed on from the caller.
    unsafe { std::hint::black_box(f)(k, a, lda, w, ldw, z, ldz) }
}

/// # Safety
/// The CPU has AVX-512F; z is valid for writes at i * ldz + j for i < a.rows, j < w.rows.
#[target_feature(enable = "avx512f")]
pub unsafe fn abt<T: Simd>(a: Mat<'_, T>, w: Mat<'_, T>, zp: *mut T, ldz: usize) {
    let k = a.cols;
    let (ap, wp) = (a.data.as_ptr(), w.data.as_ptr());
    let grouped = a.rows >= GROUPED_MIN && w.rows >= GROUPED_MIN;
    let rw = if grouped { GROUP_COLS } else { ROWS_W };
    for (i, s, j, r) in abt_tiles(a.rows, w.rows, rw) {
        // SAFETY: rows i..i+s of A, j..j+r of W and the z block are in bounds (`lanes::abt`); a
        // grouped tile's masked stores write only z[i..i+s][j..j+4].
        unsafe {
            let (a0, w0, z0) = (ap.add(i * a.ld), wp.add(j * w.ld), zp.add(i * ldz + j));
            if r == rw && grouped {
                tile_edge::<T, GROUP_COLS>(s, k, a0, a.ld, w0, w.ld, z0, ldz);
            } else if r == rw {
                tile_edge::<T, ROWS_W>(s, k, a0, a.ld, w0, w.ld, z0, ldz);
            } else {
                for rr in 0..r {
                    let w_row = w0.add(rr * w.ld);
                    tile_edge::<T, 1>(s, k, a0, a.ld, w_row, w.ld, z0.add(rr), ldz);
                }
            }
        }
    }
}

/// R output rows from r0, V vectors of columns from c0 (the last `width` < L V-wide if masked).
///
/// # Safety
/// The CPU must support AVX-512F; rows r0..r0+R and columns c0..c0+L*V (as masked by `m`) must lie
/// inside `out` (row stride `ldo`) and inside `coef` and `src` as `combine` checked them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn comb_tile<T: Simd, const R: usize, const V: usize>(
    coef: &Coef<'_, T>,
    src: &Mat<'_, T>,
    out: *mut T,
    ldo: usize,
    r0: usize,
    c0: usize,
    m: T::M,
    epilogue: Epilogue<T>,
) {
    let lanes = T::LANES;
    unsafe {
        let (cp, sp) = (coef.data.as_ptr(), src.data.as_ptr());
        let mut acc = [[T::zero(); V]; R];
        for t in 0..src.rows {
            let row = sp.add(t * src.ld + c0);
            let mut sv = [T::zero(); V];
            for (v, x) in sv.iter_mut().enumerate() {
                *x = if V == 1 {
                    T::maskz_loadu(m, row)
                } else {
                    T::loadu(row.add(v * lanes))
                };
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let cf = T::set1(*cp.add((r0 + r) * coef.row_stride + t * coef.term_stride));
                for (x, s) in acc_r.iter_mut().zip(&sv) {
                    *x = T::fmadd(cf, *s, *x);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, g) in acc_r.iter().enumerate() {
                let p = out.add((r0 + r) * ldo + c0 + v * lanes);
                let value = match epilogue {
                    Epilogue::Assign => *g,
                    Epilogue::Axpy(alpha) => {
                        let o = if V == 1 {
                            T::maskz_loadu(m, p)
                        } else {
                            T::loadu(p)
                        };
                        T::fmadd(T::set1(alpha), *g, o)
                    }
                };
                if V == 1 {
                    T::mask_storeu(p, m, value);
                } else {
                    T::storeu(p, value);
                }
            }
        }
    }
}

/// Output rows per tile of [`combine`] when W is the output (the SGD update: many rows, a batch of
/// terms): 6 rows by 4 vectors, 24 accumulators, loading 4 + 6 values per 24 multiply-adds where 4 x 4
/// loads 8 per 16. A W of few rows falls to edges, so only for at least [`TALL_MIN`] output rows and
/// terms.
const TALL_ROWS: usize = 6;
const TALL_MIN: usize = 32;
/// Output rows per tile where 2 vectors of columns are left (2 but not 4: the chain kernels' update
/// of a panel of W, 32 f32 or 16 f64 wide): 12 rows by 2 vectors, 24 accumulators, loading 2 + 12
/// values per 24 multiply-adds (1 vector of 6 or 4 rows, as before, kept 6 or 4 accumulators: too
/// few chains to hide the multiply-add's latency).
const PAIR_ROWS: usize = 12;

/// # Safety
/// The CPU has AVX-512F; out is valid for reads and writes over its rows x cols.
#[target_feature(enable = "avx512f")]
pub unsafe fn combine<T: Simd>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: Out<T>,
    epilogue: Epilogue<T>,
) {
    // SAFETY: passed on.
    unsafe {
        if out.rows >= TALL_MIN && src.rows >= TALL_MIN {
            combine_walk::<T, TALL_ROWS>(coef, src, out, epilogue)
        } else {
            combine_walk::<T, COMB_ROWS>(coef, src, out, epilogue)
        }
    }
}

/// [`combine`] with tiles of `CR` output rows (then [`COMB_ROWS`], then single rows at the edge)
/// by [`COMB_VECS`] vectors.
///
/// # Safety
/// As [`combine`].
#[target_feature(enable = "avx512f")]
unsafe fn combine_walk<T: Simd, const CR: usize>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: Out<T>,
    epilogue: Epilogue<T>,
) {
    let lanes = T::LANES;
    let (rows, cols, ldo) = (out.rows, out.cols, out.ld);
    let op = out.ptr;
    let block = lanes * COMB_VECS;
    let mut c0 = 0;
    while c0 < cols {
        let wide = cols - c0 >= block;
        let pair = !wide && cols - c0 >= 2 * lanes;
        let width = if wide {
            block
        } else if pair {
            2 * lanes
        } else {
            (cols - c0).min(lanes)
        };
        let m = T::mask(width);
        let mut r = 0;
        if pair {
            while r < rows {
                let left = rows - r;
                let tile_rows = if left >= PAIR_ROWS {
                    PAIR_ROWS
                } else if left >= COMB_ROWS {
                    COMB_ROWS
                } else {
                    1
                };
                // SAFETY: rows r..r+tile_rows of out and columns c0..c0+2L are in bounds
                // (`lanes::combine`).
                unsafe {
                    let (c, s, e) = (&coef, &src, epilogue);
                    match tile_rows {
                        PAIR_ROWS => comb_tile::<T, PAIR_ROWS, 2>(c, s, op, ldo, r, c0, m, e),
                        COMB_ROWS => comb_tile::<T, COMB_ROWS, 2>(c, s, op, ldo, r, c0, m, e),
                        _ => comb_tile::<T, 1, 2>(c, s, op, ldo, r, c0, m, e),
                    }
                }
                r += tile_rows;
            }
        }
        while r < rows {
            let left = rows - r;
            let tile_rows = if left >= CR {
                CR
            } else if left >= COMB_ROWS {
                COMB_ROWS
            } else {
                1
            };
            // SAFETY: rows r..r+tile_rows of out and columns c0..c0+width are in bounds
            // (`lanes::combine`); a narrow tile touches only the masked lanes.
            unsafe {
                if tile_rows == CR && wide {
                    comb_tile::<T, CR, COMB_VECS>(&coef, &src, op, ldo, r, c0, m, epilogue)
                } else if tile_rows == CR {
                    comb_tile::<T, CR, 1>(&coef, &src, op, ldo, r, c0, m, epilogue)
                } else if tile_rows == COMB_ROWS && wide {
                    comb_tile::<T, COMB_ROWS, COMB_VECS>(&coef, &src, op, ldo, r, c0, m, epilogue)
                } else if tile_rows == COMB_ROWS {
                    comb_tile::<T, COMB_ROWS, 1>(&coef, &src, op, ldo, r, c0, m, epilogue)
                } else if wide {
                    comb_tile::<T, 1, COMB_VECS>(&coef, &src, op, ldo, r, c0, m, epilogue)
                } else {
                    comb_tile::<T, 1, 1>(&coef, &src, op, ldo, r, c0, m, epilogue)
                }
            }
            r += tile_rows;
        }
        c0 += width;
    }
}
