//! The lanes kernels: the three matrix products of an SGD step, in f32 ("lanes16") and f64 ("lanes8"),
//! with an arithmetic contract that fixes every rounding, so their results are the same bits on every CPU.
//! What runs were trained with before the [`chain`] kernels (every new run's, with a simpler contract and
//! W in panels); kept so that those runs verify and resume with the bits they were trained with, and
//! their `combine` serves the chain kernels too (its contract is theirs).
//!
//! A general GEMM packs its operands into cache-sized panels on every call. At batch 10 that means
//! copying all of W^1 (1.6 MB for [784, 512, 10] in f32) twice per step to do 10 multiply-adds per
//! weight; these kernels read the weights in place, once per product, with register tiles of a few rows
//! (on AVX-512: 5 rows of W by 4 of A for Z = A W^T, from 32 rows 4 by 4 with the trees summed L at a
//! time; 4 output rows by 4 vectors for the others, 6 by 4 for a tall update; on AVX2+FMA, with half the
//! registers: 3 rows of W by 2 of A, and 6 output rows by 2 registers), 64-byte aligned buffers, and
//! blocks of rows of A that stay in L2 for tall products (evaluation). [`update_then_abt`] makes the
//! SGD update of W and the next batch's product one pass over W.
//!
//! # The contract (what the bits are)
//! With L lanes (16 for f32, 8 for f64: one 512-bit vector):
//! - [`abt`], Z = A W^T: each `z[i][j] = sum_k a[i][k] w[j][k]` is summed in L lanes: lane l accumulates
//!   the k = l (mod L) terms in increasing k with fused multiply-adds from +0, then the lanes are added
//!   pairwise as a tree: l + (l + L/2), then + L/4, ..., + 1.
//! - [`combine`], rows as combinations of rows: `g[r][c] = sum_t coef(r, t) src[t][c]`, a fused
//!   multiply-add chain in increasing t from +0; then out = g (`Epilogue::Assign`) or
//!   out = fma(alpha, g, out) (`Epilogue::Axpy`). The SGD update W -= (lr/n) Delta^T A and the backward
//!   product Delta^(l-1) = Delta^l W^l are both of this form.
//!
//! Each output element's arithmetic depends only on its own inputs and this order, never on tiling,
//! alignment or threads. The AVX-512 and AVX2+FMA paths (intrinsics) and the portable path (L-lane
//! arrays and `mul_add`) implement the same contract for both types; tests compare their bits.
//!
//! f64 runs stored before lanes8 existed used the GEMM of the `matrixmultiply` crate, whose AVX-512, AVX2
//! and generic kernels round differently: [`Kernel::Gemm`] keeps it, so that `verify` re-trains such a run
//! with the kernel it was trained with.

pub(crate) mod simd;

use super::{Implementation, implementation};
use crate::core::pool;

/// An element type of the lanes kernels: how many lanes its contract sums in, and its arithmetic.
pub trait Lane:
    Copy + Default + PartialEq + std::ops::Add<Output = Self> + Send + Sync + std::fmt::Debug + 'static
{
    /// L: the lanes of the contract (one 512-bit vector).
    const LANES: usize;
    /// L values: what the portable path keeps in flight for one vector.
    type V: Copy + Default + AsRef<[Self]> + AsMut<[Self]>;
    /// self * a + b, rounded once.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The contract's tree over L lanes: l + (l + L/2), then + L/4, ..., + 1.
    fn tree_sum(v: &Self::V) -> Self {
        let mut x: Self::V = *v;
        let mut half = Self::LANES / 2;
        while half > 0 {
            let s = x.as_mut();
            for l in 0..half {
                s[l] = s[l] + s[l + half];
            }
            half /= 2;
        }
        x.as_ref()[0]
    }
}

impl Lane for f32 {
    const LANES: usize = 16;
    type V = [f32; 16];
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        f32::mul_add(self, a, b)
    }
}

impl Lane for f64 {
    const LANES: usize = 8;
    type V = [f64; 8];
    #[inline(always)]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        f64::mul_add(self, a, b)
    }
}

/// A row-major matrix view: `rows` x `cols`, row `i` starting at `data[i * ld]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

/// The mutable counterpart of [`Mat`].
#[derive(Debug)]
pub struct MatMut<'a, T = f32> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

pub(crate) fn fits(len: usize, rows: usize, cols: usize, ld: usize) -> bool {
    rows == 0 || cols == 0 || (cols <= ld && (rows - 1) * ld + cols <= len)
}

/// Z = A W^T: a [n, k], w [h, k], z [n, h]. Panics if the shapes disagree (a programming error).
/// With [`pool::threads`] > 1 and enough work, the rows of W (columns of Z) are split between threads:
/// each element is computed whole by one thread, so the bits do not depend on the split.
pub fn abt<T: Lane + Vector>(a: Mat<'_, T>, w: Mat<'_, T>, z: MatMut<'_, T>) {
    assert!(a.cols == w.cols && z.rows == a.rows && z.cols == w.rows);
    assert!(fits(a.data.len(), a.rows, a.cols, a.ld));
    assert!(fits(w.data.len(), w.rows, w.cols, w.ld));
    assert!(fits(z.data.len(), z.rows, z.cols, z.ld));
    let zp = SharedOut(z.data.as_mut_ptr());
    let ldz = z.ld;
    let parts = pool::parts(a.rows * w.rows * a.cols, w.rows / ROW_GRANULE);
    let run = |p: usize| {
        let (j0, j1) = pool::split(w.rows, parts, p, ROW_GRANULE);
        let w_part = Mat {
            data: &w.data[(j0 * w.ld).min(w.data.len())..],
            rows: j1 - j0,
            ..w
        };
        // SAFETY: the asserts above bound rows 0..n x columns j0..j1 of z, and parts write disjoint columns.
        unsafe { abt_raw(a, w_part, zp.at(j0), ldz) }
    };
    pool::run(parts, &run);
}

/// A pointer into the output that threads writing disjoint elements share.
pub(crate) struct SharedOut<T>(pub(crate) *mut T);
impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}
// SAFETY: only used for writes to disjoint elements, joined before the output's borrow ends.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The pointer `offset` elements on.
    ///
    /// # Safety
    /// The offset must stay inside the output buffer.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// [`abt`] on one block of W rows, results at `z` (row stride `ldz`).
///
/// # Safety
/// `z` must be valid for writes at i * ldz + j for i < a.rows, j < w.rows.
pub(crate) unsafe fn abt_raw<T: Lane + Vector>(
    a: Mat<'_, T>,
    w: Mat<'_, T>,
    z: *mut T,
    ldz: usize,
) {
    // SAFETY: the CPU has the features of the implementation chosen; the caller bounds z.
    unsafe {
        match implementation() {
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx512 => simd::avx512::abt(a, w, z, ldz),
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx2Fma => simd::avx2::abt(a, w, z, ldz),
            // The lanes contract's Z = A W^T (runs of earlier versions only) has no NEON tiles: on
            // aarch64 the portable code, compiled with NEON, carries it out.
            Implementation::Neon | Implementation::Portable => simd::portable::abt(a, w, z, ldz),
            #[cfg(not(target_arch = "x86_64"))]
            _ => simd::portable::abt(a, w, z, ldz),
        }
    }
}

/// Rows of W per block of [`update_then_abt`]: updated, then multiplied while they are still in cache (a
/// multiple of [`ROW_GRANULE`], so both products keep their full tiles).
const FUSED_BLOCK: usize = 40;

/// The SGD update of W followed by the next batch's product with the updated W, in one pass over W:
/// `W[r][c] = fma(alpha, sum_t coef(r, t) src[t][c], W[r][c])` ([`combine`] with [`Epilogue::Axpy`]), then
/// `Z = A W^T` ([`abt`]), a block of 40 rows of W at a time. When W does not fit in the
/// core's cache (W^1 in f64 is 3.2 MB), the separate products stream it from memory three times a step
/// (read, write, read) and this twice.
///
/// Each element's arithmetic is exactly that of [`combine`] then [`abt`] (the block order changes which
/// elements are computed when, never how), so the bits are those of the two calls; with threads, the
/// rows of W are split between them and each thread updates and multiplies its own rows.
pub fn update_then_abt<T: Lane + Vector>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    w: MatMut<'_, T>,
    alpha: T,
    a: Mat<'_, T>,
    z: MatMut<'_, T>,
) {
    assert!(src.cols == w.cols && a.cols == w.cols && z.rows == a.rows && z.cols == w.rows);
    assert!(fits(src.data.len(), src.rows, src.cols, src.ld));
    assert!(fits(w.data.len(), w.rows, w.cols, w.ld));
    assert!(fits(a.data.len(), a.rows, a.cols, a.ld));
    assert!(fits(z.data.len(), z.rows, z.cols, z.ld));
    if w.rows > 0 && src.rows > 0 {
        let last = (w.rows - 1) * coef.row_stride + (src.rows - 1) * coef.term_stride;
        assert!(last < coef.data.len());
    }
    let (wp, zp) = (
        SharedOut(w.data.as_mut_ptr()),
        SharedOut(z.data.as_mut_ptr()),
    );
    let (rows, cols, ldw, ldz) = (w.rows, w.cols, w.ld, z.ld);
    let granule = ROW_GRANULE;
    let parts = pool::parts(rows * cols * (src.rows + a.rows), rows / granule);
    let run = |p: usize| {
        let (r0, r1) = pool::split(rows, parts, p, granule);
        let mut j = r0;
        while j < r1 {
            let r = (r1 - j).min(FUSED_BLOCK);
            let coef_part = Coef {
                data: &coef.data[(j * coef.row_stride).min(coef.data.len())..],
                ..coef
            };
            // SAFETY: the asserts above bound rows j..j+r of w and columns j..j+r of z; parts take
            // disjoint rows. The block's rows are written by the update, then read by the product, on
            // this thread only; no other part reads them.
            unsafe {
                combine_raw(
                    coef_part,
                    src,
                    wp.at(j * ldw),
                    r,
                    cols,
                    ldw,
                    Epilogue::Axpy(alpha),
                );
                let block = std::slice::from_raw_parts(wp.at(j * ldw), (r - 1) * ldw + cols);
                let w_block = Mat {
                    data: block,
                    rows: r,
                    cols,
                    ld: ldw,
                };
                abt_raw(a, w_block, zp.at(j), ldz);
            }
            j += r;
        }
    };
    pool::run(parts, &run);
}

/// What [`combine`] does with each `g[r][c]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue<T = f32> {
    /// out = g
    Assign,
    /// out = fma(alpha, g, out)
    Axpy(T),
}

/// Coefficients coef(r, t) = data[r * row_stride + t * term_stride].
#[derive(Debug, Clone, Copy)]
pub struct Coef<'a, T = f32> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub term_stride: usize,
}

/// `out[r][c] = epilogue(sum_t coef(r, t) src[t][c])` for r < out.rows, c < out.cols, t < src.rows.
/// With [`pool::threads`] > 1 and enough work, the output rows are split between threads (bits unchanged).
pub fn combine<T: Lane + Vector>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: MatMut<'_, T>,
    epilogue: Epilogue<T>,
) {
    assert!(src.cols == out.cols);
    assert!(fits(src.data.len(), src.rows, src.cols, src.ld));
    assert!(fits(out.data.len(), out.rows, out.cols, out.ld));
    if out.rows > 0 && src.rows > 0 {
        let last = (out.rows - 1) * coef.row_stride + (src.rows - 1) * coef.term_stride;
        assert!(last < coef.data.len());
    }
    let op = SharedOut(out.data.as_mut_ptr());
    let (rows, cols, ld) = (out.rows, out.cols, out.ld);
    let parts = pool::parts(rows * cols * src.rows, rows / COMB_ROWS);
    let run = |p: usize| {
        let (r0, r1) = pool::split(rows, parts, p, COMB_ROWS);
        let coef_part = Coef {
            data: &coef.data[(r0 * coef.row_stride).min(coef.data.len())..],
            ..coef
        };
        // SAFETY: the asserts above bound rows r0..r1 of out; parts write disjoint rows.
        unsafe { combine_raw(coef_part, src, op.at(r0 * ld), r1 - r0, cols, ld, epilogue) }
    };
    pool::run(parts, &run);
}

/// [`combine`] on `rows` x `cols` outputs at `out` (row stride `ldo`).
///
/// # Safety
/// `out` must be valid for reads and writes at r * ldo + c for r < rows, c < cols.
pub(crate) unsafe fn combine_raw<T: Lane + Vector>(
    coef: Coef<'_, T>,
    src: Mat<'_, T>,
    out: *mut T,
    rows: usize,
    cols: usize,
    ldo: usize,
    epilogue: Epilogue<T>,
) {
    let out = Out {
        ptr: out,
        rows,
        cols,
        ld: ldo,
    };
    // SAFETY: the CPU has the features of the implementation chosen; the caller bounds out.
    unsafe {
        match implementation() {
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx512 => simd::avx512::combine(coef, src, out, epilogue),
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx2Fma => simd::avx2::combine(coef, src, out, epilogue),
            #[cfg(target_arch = "aarch64")]
            Implementation::Neon => simd::neon::combine(coef, src, out, epilogue),
            _ => simd::portable::combine(coef, src, out, epilogue),
        }
    }
}

/// An output block as a raw pointer: rows x cols at `ptr`, row stride `ld`.
pub(crate) struct Out<T> {
    pub(crate) ptr: *mut T,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) ld: usize,
}
impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

/// Tile sizes of the portable and AVX-512 paths: [`abt`] keeps `ROWS_W` rows of W (4 on AVX-512 from 32
/// rows) and `ROWS_A` rows of A in flight (20 or 16 accumulators); [`combine`] `COMB_ROWS` output rows
/// by `COMB_VECS` vectors of L columns.
pub(crate) const ROWS_W: usize = 5;
/// Rows of W per part when threads split a product, so that every part keeps full tiles: a multiple of
/// the W rows of the portable and AVX-512 walks (5 and 4) and of [`COMB_ROWS`] (AVX2's tiles of 3 rows
/// end a part with one of 2, its update's tiles of 6 with one of 2 single rows).
pub(crate) const ROW_GRANULE: usize = 20;
pub(crate) const ROWS_A: usize = 4;
pub(crate) const COMB_ROWS: usize = 4;
pub(crate) const COMB_VECS: usize = 4;
/// Rows of A per outer block of [`abt`], so that the block stays in L2 while W's rows pass by.
pub(crate) const A_BLOCK: usize = 128;

/// The register tiles of [`abt`] in order, as (i, s, j, r): rows i..i+s of A against rows j..j+r of W. Blocks
/// of [`A_BLOCK`] rows of A stay in L2 while W passes by in blocks of [`ROWS_W`] rows.
pub(crate) fn abt_tiles(
    n: usize,
    h: usize,
    rows_w: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    abt_walk(n, h, rows_w, ROWS_A, A_BLOCK)
}

/// [`abt_tiles`] with the rows of A per tile and per outer block given.
pub(crate) fn abt_walk(
    n: usize,
    h: usize,
    rows_w: usize,
    rows_a: usize,
    a_block: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).step_by(a_block).flat_map(move |i0| {
        let i_end = (i0 + a_block).min(n);
        (0..h).step_by(rows_w).flat_map(move |j| {
            let r = (h - j).min(rows_w);
            (i0..i_end)
                .step_by(rows_a)
                .map(move |i| (i, (i_end - i).min(rows_a), j, r))
        })
    })
}

/// The vector operations of an element type (AVX-512 and AVX2+FMA): what lets one generic path per
/// instruction set serve f32 and f64 (a plain marker on other architectures).
#[cfg(target_arch = "x86_64")]
pub trait Vector: Lane + simd::avx512::Simd + simd::avx2::Simd2 {}
#[cfg(target_arch = "x86_64")]
impl<T: Lane + simd::avx512::Simd + simd::avx2::Simd2> Vector for T {}
/// The vector operations of an element type (NEON on aarch64).
#[cfg(target_arch = "aarch64")]
pub trait Vector: Lane + simd::neon::Neon {}
#[cfg(target_arch = "aarch64")]
impl<T: Lane + simd::neon::Neon> Vector for T {}
/// The vector operations of an element type (none on this architecture).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub trait Vector: Lane {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<T: Lane> Vector for T {}
