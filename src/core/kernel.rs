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

use std::sync::OnceLock;

use crate::core::config::Dtype;
use crate::core::pool;

/// The GEMM library's version, recorded with the kernel it selects (its kernels round differently).
pub const MATRIXMULTIPLY_VERSION: &str = "0.3.11";

/// Lanes of the f32 contract.
pub const LANES: usize = 16;

/// Set to `portable` or `avx2-fma` to run the chain and lanes kernels with that implementation instead of the
/// fastest one (same bits, slower; for checking that claim). `portable` on x86-64 without FMA instructions
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
    /// The chain kernels of [`chain`] ("mlp-runner-chain", f32 and f64): every output one fused
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

pub mod chain;

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
    Portable,
}

impl Implementation {
    pub fn as_str(self) -> &'static str {
        match self {
            Implementation::Avx512 => "avx512",
            Implementation::Avx2Fma => "avx2-fma",
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
    v
}

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

fn fits(len: usize, rows: usize, cols: usize, ld: usize) -> bool {
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
struct SharedOut<T>(*mut T);
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
    unsafe fn at(self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// [`abt`] on one block of W rows, results at `z` (row stride `ldz`).
///
/// # Safety
/// `z` must be valid for writes at i * ldz + j for i < a.rows, j < w.rows.
unsafe fn abt_raw<T: Lane + Vector>(a: Mat<'_, T>, w: Mat<'_, T>, z: *mut T, ldz: usize) {
    // SAFETY: the CPU has the features of the implementation chosen; the caller bounds z.
    unsafe {
        match implementation() {
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx512 => avx512::abt(a, w, z, ldz),
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx2Fma => avx2::abt(a, w, z, ldz),
            _ => portable::abt(a, w, z, ldz),
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
unsafe fn combine_raw<T: Lane + Vector>(
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
            Implementation::Avx512 => avx512::combine(coef, src, out, epilogue),
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx2Fma => avx2::combine(coef, src, out, epilogue),
            _ => portable::combine(coef, src, out, epilogue),
        }
    }
}

/// An output block as a raw pointer: rows x cols at `ptr`, row stride `ld`.
struct Out<T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    ld: usize,
}
impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

/// The contract written plainly, one element at a time: the reference the fast paths are tested against.
pub mod reference {
    use super::{Coef, Epilogue, Lane, Mat, MatMut};

    /// One `z[i][j]` of [`super::abt`].
    pub fn dot<T: Lane>(a: &[T], w: &[T]) -> T {
        let mut lanes = T::V::default();
        let l = lanes.as_mut();
        for (k, (&x, &y)) in a.iter().zip(w).enumerate() {
            l[k % T::LANES] = x.mul_add(y, l[k % T::LANES]);
        }
        T::tree_sum(&lanes)
    }

    /// The f32 tree, written out: l + (l+8), then + 4, + 2, + 1.
    pub fn tree_sum(v: &[f32; 16]) -> f32 {
        <f32 as Lane>::tree_sum(v)
    }

    pub fn abt<T: Lane>(a: Mat<'_, T>, w: Mat<'_, T>, z: MatMut<'_, T>) {
        for i in 0..a.rows {
            for j in 0..w.rows {
                let ar = &a.data[i * a.ld..i * a.ld + a.cols];
                let wr = &w.data[j * w.ld..j * w.ld + w.cols];
                z.data[i * z.ld + j] = dot(ar, wr);
            }
        }
    }

    pub fn combine<T: Lane>(
        coef: Coef<'_, T>,
        src: Mat<'_, T>,
        out: MatMut<'_, T>,
        epilogue: Epilogue<T>,
    ) {
        for r in 0..out.rows {
            for c in 0..out.cols {
                let mut g = T::default();
                for t in 0..src.rows {
                    let cf = coef.data[r * coef.row_stride + t * coef.term_stride];
                    g = cf.mul_add(src.data[t * src.ld + c], g);
                }
                let o = &mut out.data[r * out.ld + c];
                *o = match epilogue {
                    Epilogue::Assign => g,
                    Epilogue::Axpy(alpha) => alpha.mul_add(g, *o),
                };
            }
        }
    }
}

/// Tile sizes of the portable and AVX-512 paths: [`abt`] keeps `ROWS_W` rows of W (4 on AVX-512 from 32
/// rows) and `ROWS_A` rows of A in flight (20 or 16 accumulators); [`combine`] `COMB_ROWS` output rows
/// by `COMB_VECS` vectors of L columns.
const ROWS_W: usize = 5;
/// Rows of W per part when threads split a product, so that every part keeps full tiles: a multiple of
/// the W rows of the portable and AVX-512 walks (5 and 4) and of [`COMB_ROWS`] (AVX2's tiles of 3 rows
/// end a part with one of 2, its update's tiles of 6 with one of 2 single rows).
const ROW_GRANULE: usize = 20;
const ROWS_A: usize = 4;
const COMB_ROWS: usize = 4;
const COMB_VECS: usize = 4;
/// Rows of A per outer block of [`abt`], so that the block stays in L2 while W's rows pass by.
const A_BLOCK: usize = 128;

/// The register tiles of [`abt`] in order, as (i, s, j, r): rows i..i+s of A against rows j..j+r of W. Blocks
/// of [`A_BLOCK`] rows of A stay in L2 while W passes by in blocks of [`ROWS_W`] rows.
fn abt_tiles(
    n: usize,
    h: usize,
    rows_w: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    abt_walk(n, h, rows_w, ROWS_A, A_BLOCK)
}

/// [`abt_tiles`] with the rows of A per tile and per outer block given.
fn abt_walk(
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

/// Generic L-lane code: the portable path, also compiled for AVX2+FMA.
mod portable {
    use super::{COMB_ROWS, COMB_VECS, Coef, Epilogue, Lane, Mat, Out, ROWS_A, ROWS_W};

    #[inline(always)]
    fn tile<T: Lane, const R: usize, const S: usize>(
        a: &Mat<'_, T>,
        i: usize,
        w: &Mat<'_, T>,
        j: usize,
    ) -> [[T::V; R]; S] {
        let k = a.cols;
        let lanes = T::LANES;
        let mut acc = [[T::V::default(); R]; S];
        let mut c = 0;
        while c < k {
            let width = (k - c).min(lanes);
            let mut wv = [T::V::default(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                let row = (j + r) * w.ld + c;
                v.as_mut()[..width].copy_from_slice(&w.data[row..row + width]);
            }
            for (s, acc_s) in acc.iter_mut().enumerate() {
                let mut av = T::V::default();
                let row = (i + s) * a.ld + c;
                av.as_mut()[..width].copy_from_slice(&a.data[row..row + width]);
                for (acc_sr, wv_r) in acc_s.iter_mut().zip(&wv) {
                    let (acc_sr, av, wv_r) = (acc_sr.as_mut(), av.as_ref(), wv_r.as_ref());
                    for l in 0..lanes {
                        acc_sr[l] = av[l].mul_add(wv_r[l], acc_sr[l]);
                    }
                }
            }
            c += width;
        }
        acc
    }

    /// Tree-sum a tile's accumulators into z[i + s][j + r].
    ///
    /// # Safety
    /// z must be valid for writes at (i + s) * ldz + j + r.
    #[inline(always)]
    unsafe fn store<T: Lane, const R: usize, const S: usize>(
        acc: &[[T::V; R]; S],
        z: *mut T,
        ldz: usize,
        i: usize,
        j: usize,
    ) {
        for (s, acc_s) in acc.iter().enumerate() {
            for (r, v) in acc_s.iter().enumerate() {
                // SAFETY: the caller bounds the tile.
                unsafe { *z.add((i + s) * ldz + j + r) = T::tree_sum(v) };
            }
        }
    }

    /// # Safety
    /// z must be valid for writes at i * ldz + j for i < a.rows, j < w.rows.
    #[inline(always)]
    unsafe fn abt_body<T: Lane>(a: Mat<'_, T>, w: Mat<'_, T>, z: *mut T, ldz: usize) {
        for (i, s, j, r) in super::abt_tiles(a.rows, w.rows, ROWS_W) {
            // SAFETY: i + s <= a.rows and j + r <= w.rows.
            unsafe {
                if r == ROWS_W && s == ROWS_A {
                    store::<T, ROWS_W, ROWS_A>(
                        &tile::<T, ROWS_W, ROWS_A>(&a, i, &w, j),
                        z,
                        ldz,
                        i,
                        j,
                    );
                } else if r == ROWS_W {
                    for ii in i..i + s {
                        store::<T, ROWS_W, 1>(&tile::<T, ROWS_W, 1>(&a, ii, &w, j), z, ldz, ii, j);
                    }
                } else {
                    for ii in i..i + s {
                        for jj in j..j + r {
                            store::<T, 1, 1>(&tile::<T, 1, 1>(&a, ii, &w, jj), z, ldz, ii, jj);
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// As [`abt_body`].
    pub unsafe fn abt<T: Lane>(a: Mat<'_, T>, w: Mat<'_, T>, z: *mut T, ldz: usize) {
        // SAFETY: passed on.
        unsafe { abt_body(a, w, z, ldz) }
    }

    /// # Safety
    /// out valid for rows r0..r0+R, columns c0..c0+width.
    #[inline(always)]
    unsafe fn comb_tile<T: Lane, const R: usize>(
        coef: &Coef<'_, T>,
        src: &Mat<'_, T>,
        out: Out<T>,
        r0: usize,
        c0: usize,
        width: usize,
        epilogue: Epilogue<T>,
    ) {
        let lanes = T::LANES;
        let mut acc = [[T::V::default(); COMB_VECS]; R];
        for t in 0..src.rows {
            let mut sv = [T::V::default(); COMB_VECS];
            for (v, s) in sv.iter_mut().enumerate() {
                let lo = (v * lanes).min(width);
                let hi = ((v + 1) * lanes).min(width);
                let row = t * src.ld + c0;
                s.as_mut()[..hi - lo].copy_from_slice(&src.data[row + lo..row + hi]);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let cf = coef.data[(r0 + r) * coef.row_stride + t * coef.term_stride];
                for (acc_rv, s) in acc_r.iter_mut().zip(&sv) {
                    let (acc_rv, s) = (acc_rv.as_mut(), s.as_ref());
                    for l in 0..lanes {
                        acc_rv[l] = cf.mul_add(s[l], acc_rv[l]);
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for c in 0..width {
                // SAFETY: the caller bounds the tile.
                let x = unsafe { &mut *out.ptr.add((r0 + r) * out.ld + c0 + c) };
                let g = acc_r[c / lanes].as_ref()[c % lanes];
                *x = match epilogue {
                    Epilogue::Assign => g,
                    Epilogue::Axpy(alpha) => alpha.mul_add(g, *x),
                };
            }
        }
    }

    /// # Safety
    /// out valid for reads and writes over its rows x cols.
    #[inline(always)]
    unsafe fn combine_body<T: Lane>(
        coef: Coef<'_, T>,
        src: Mat<'_, T>,
        out: Out<T>,
        epilogue: Epilogue<T>,
    ) {
        let block = T::LANES * COMB_VECS;
        for c0 in (0..out.cols).step_by(block) {
            let width = (out.cols - c0).min(block);
            let mut r = 0;
            while r < out.rows {
                // SAFETY: r + R <= out.rows, c0 + width <= out.cols.
                unsafe {
                    if out.rows - r >= COMB_ROWS {
                        comb_tile::<T, COMB_ROWS>(&coef, &src, out, r, c0, width, epilogue);
                        r += COMB_ROWS;
                    } else {
                        comb_tile::<T, 1>(&coef, &src, out, r, c0, width, epilogue);
                        r += 1;
                    }
                }
            }
        }
    }

    /// # Safety
    /// As [`combine_body`].
    pub unsafe fn combine<T: Lane>(
        coef: Coef<'_, T>,
        src: Mat<'_, T>,
        out: Out<T>,
        epilogue: Epilogue<T>,
    ) {
        // SAFETY: passed on.
        unsafe { combine_body(coef, src, out, epilogue) }
    }
}

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

/// The vector operations of an element type (AVX-512 and AVX2+FMA): what lets one generic path per
/// instruction set serve f32 and f64 (a plain marker on other architectures).
#[cfg(target_arch = "x86_64")]
pub trait Vector: Lane + avx512::Simd + avx2::Simd2 {}
#[cfg(target_arch = "x86_64")]
impl<T: Lane + avx512::Simd + avx2::Simd2> Vector for T {}
/// The vector operations of an element type (none on this architecture).
#[cfg(not(target_arch = "x86_64"))]
pub trait Vector: Lane {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: Lane> Vector for T {}

/// AVX-512F intrinsics: the same contract, L lanes in one register, tails by masked loads (a masked-off
/// lane adds fma(0, 0, acc) = acc: an accumulator that starts at +0 is never -0).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{COMB_ROWS, COMB_VECS, Coef, Epilogue, Lane, Mat, Out, ROWS_A, ROWS_W};

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

    impl Simd for f32 {
        type R = __m512;
        type M = __mmask16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn maskz_loadu(m: __mmask16, p: *const f32) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mask_storeu(p: *mut f32, m: __mmask16, v: __m512) {
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
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
        type R = __m512d;
        type M = __mmask8;
        #[inline(always)]
        unsafe fn zero() -> __m512d {
            unsafe { _mm512_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const f64) -> __m512d {
            unsafe { _mm512_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn maskz_loadu(m: __mmask8, p: *const f64) -> __m512d {
            unsafe { _mm512_maskz_loadu_pd(m, p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            unsafe { _mm512_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: f64) -> __m512d {
            unsafe { _mm512_set1_pd(x) }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut f64, v: __m512d) {
            unsafe { _mm512_storeu_pd(p, v) }
        }
        #[inline(always)]
        unsafe fn mask_storeu(p: *mut f64, m: __mmask8, v: __m512d) {
            unsafe { _mm512_mask_storeu_pd(p, m, v) }
        }
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
        for (i, s, j, r) in super::abt_tiles(a.rows, w.rows, rw) {
            // SAFETY: rows i..i+s of A, j..j+r of W and the z block are in bounds (`super::abt`); a
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
                    // (`super::combine`).
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
                // (`super::combine`); a narrow tile touches only the masked lanes.
                unsafe {
                    if tile_rows == CR && wide {
                        comb_tile::<T, CR, COMB_VECS>(&coef, &src, op, ldo, r, c0, m, epilogue)
                    } else if tile_rows == CR {
                        comb_tile::<T, CR, 1>(&coef, &src, op, ldo, r, c0, m, epilogue)
                    } else if tile_rows == COMB_ROWS && wide {
                        comb_tile::<T, COMB_ROWS, COMB_VECS>(
                            &coef, &src, op, ldo, r, c0, m, epilogue,
                        )
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
}

/// AVX2+FMA intrinsics: the same contract in 256-bit registers, so one contract vector of L lanes is a
/// pair of registers (lanes 0..L/2 and L/2..L) for both types; tails by masked loads, as on AVX-512.
///
/// With 16 registers (not 32), the tiles are smaller than on AVX-512: [`abt`] keeps 3 rows of W by 2
/// rows of A in flight (12 accumulators, loading 10 registers per 12 multiply-adds; 3 rows of W rather
/// than 2 by 3 of A, so that the operand streamed from L2 is loaded less often), [`combine`] 6 output
/// rows by 2 registers of columns (12 accumulators, 2 loads and 6 broadcasts per 12; 4 by 3 leaves one
/// accumulator spilled, a store-to-load round trip on its chain at every term), walked in bands of rows
/// ([`BAND_ROWS`]). The portable code compiled for AVX2 cannot stand in for this: its 5 x 4 tile of
/// L-lane arrays needs 40 registers of accumulators and spills on every multiply-add.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Coef, Epilogue, Lane, Mat, Out};

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

    impl Simd2 for f32 {
        type R = __m256;
        const HALF: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f32, width: usize) -> __m256 {
            unsafe {
                let m = _mm256_loadu_si256(MASKS.as_ptr().add(8 - width).cast());
                _mm256_maskload_ps(p, m)
            }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut f32, width: usize, v: __m256) {
            unsafe {
                let m = _mm256_loadu_si256(MASKS.as_ptr().add(8 - width).cast());
                _mm256_maskstore_ps(p, m, v)
            }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
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
        #[inline(always)]
        unsafe fn zero() -> __m256d {
            unsafe { _mm256_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn loadu(p: *const f64) -> __m256d {
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f64, width: usize) -> __m256d {
            unsafe {
                let m = _mm256_loadu_si256(MASKS.as_ptr().add(2 * (4 - width)).cast());
                _mm256_maskload_pd(p, m)
            }
        }
        #[inline(always)]
        unsafe fn storeu(p: *mut f64, v: __m256d) {
            unsafe { _mm256_storeu_pd(p, v) }
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut f64, width: usize, v: __m256d) {
            unsafe {
                let m = _mm256_loadu_si256(MASKS.as_ptr().add(2 * (4 - width)).cast());
                _mm256_maskstore_pd(p, m, v)
            }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            unsafe { _mm256_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn set1(x: f64) -> __m256d {
            unsafe { _mm256_set1_pd(x) }
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
        for (i, s, j, r) in super::abt_walk(a.rows, w.rows, TILE_W, TILE_A, a_block) {
            // SAFETY: rows i..i+s of A, j..j+r of W and the z block are in bounds (`super::abt`).
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
                    // (`super::combine`); a partial register touches only its first `width` columns.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` values in [-0.5, 0.5) from a xorshift stream (also the chain kernels' tests').
    pub(super) fn random<T: From<f32>>(len: usize, seed: u64) -> Vec<T> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                T::from((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect()
    }

    /// Every implementation this CPU runs against the one-element-at-a-time reference, over shapes with
    /// every kind of edge (rows not a multiple of the tiles, columns not a multiple of the lanes).
    fn fast_paths_give_the_reference_bits_in<T: Lane + Vector + From<f32> + Into<f64>>(
        bits: fn(&[T]) -> Vec<u64>,
        alpha: T,
    ) {
        let impls = supported();
        for (n, h, k) in [
            (1, 1, 1),
            (3, 7, 15),
            (10, 12, 33),
            (13, 6, 64),
            (5, 11, 80),
            (130, 9, 17),
            // a batch-sized A against long rows, with and without a masked tail
            (10, 23, 784),
            (16, 7, 1000),
            (3, 12, 1203),
            // the AVX-512 tiles whose trees are summed L at a time (at least 32 rows of A and of W),
            // with every kind of edge
            (45, 37, 100),
            (130, 64, 33),
            (35, 42, 16),
            // the update's 6-row tiles (at least 32 rows of W and terms), with 4-row and 1-row edges
            (33, 47, 70),
            (40, 36, 129),
            // small batches against a tall W, with edges of both
            (10, 64, 784),
            (7, 45, 33),
            // more rows of A than one outer block of the AVX2 walk holds (64 rows of 784 in f32, 32 in
            // f64), the last block partial
            (150, 7, 784),
        ] {
            let (a, w) = (random::<T>(n * k, 1), random::<T>(h * k, 2));
            let am = Mat {
                data: &a,
                rows: n,
                cols: k,
                ld: k,
            };
            let wm = Mat {
                data: &w,
                rows: h,
                cols: k,
                ld: k,
            };
            let mut want = vec![T::default(); n * h];
            reference::abt(
                am,
                wm,
                MatMut {
                    data: &mut want,
                    rows: n,
                    cols: h,
                    ld: h,
                },
            );
            // combine as the SGD update: W[h, k] += alpha * D^T A with D [n, h]
            let d = random::<T>(n * h, 3);
            let coef = Coef {
                data: &d,
                row_stride: 1,
                term_stride: h,
            };
            let mut want_w = w.clone();
            let epi = Epilogue::Axpy(alpha);
            reference::combine(
                coef,
                am,
                MatMut {
                    data: &mut want_w,
                    rows: h,
                    cols: k,
                    ld: k,
                },
                epi,
            );
            for &imp in &impls {
                let mut z = vec![T::default(); n * h];
                let mut w2 = w.clone();
                let zp = z.as_mut_ptr();
                let om = Out {
                    ptr: w2.as_mut_ptr(),
                    rows: h,
                    cols: k,
                    ld: k,
                };
                // SAFETY: each path runs only where the CPU has its features (listed above).
                unsafe {
                    match imp {
                        Implementation::Portable => {
                            portable::abt(am, wm, zp, h);
                            portable::combine(coef, am, om, epi);
                        }
                        #[cfg(target_arch = "x86_64")]
                        Implementation::Avx2Fma => {
                            avx2::abt(am, wm, zp, h);
                            avx2::combine(coef, am, om, epi);
                        }
                        #[cfg(target_arch = "x86_64")]
                        Implementation::Avx512 => {
                            avx512::abt(am, wm, zp, h);
                            avx512::combine(coef, am, om, epi);
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        _ => unreachable!(),
                    }
                }
                assert_eq!(bits(&z), bits(&want), "abt {imp:?} n={n} h={h} k={k}");
                assert_eq!(
                    bits(&w2),
                    bits(&want_w),
                    "combine {imp:?} n={n} h={h} k={k}"
                );
            }
            // and the reference is the product it claims to be
            for i in 0..n {
                for j in 0..h {
                    let exact: f64 = (0..k)
                        .map(|t| a[i * k + t].into() * w[j * k + t].into())
                        .sum();
                    let got: f64 = want[i * h + j].into();
                    assert!((got - exact).abs() < 1e-4, "abt value");
                }
            }
        }
    }

    #[test]
    fn fast_paths_give_the_reference_bits() {
        fast_paths_give_the_reference_bits_in::<f32>(
            |v| v.iter().map(|x| u64::from(x.to_bits())).collect(),
            -0.037,
        );
    }

    #[test]
    fn fast_paths_give_the_reference_bits_in_f64() {
        fast_paths_give_the_reference_bits_in::<f64>(
            |v| v.iter().map(|x| x.to_bits()).collect(),
            -0.037,
        );
    }

    #[test]
    fn the_trees_are_the_contract() {
        // f32: l + (l+8), then + 4, + 2, + 1, written out.
        let v: [f32; 16] = std::array::from_fn(|l| 1.0 + l as f32 * 1e-7);
        let h8: [f32; 8] = std::array::from_fn(|l| v[l] + v[l + 8]);
        let h4: [f32; 4] = std::array::from_fn(|l| h8[l] + h8[l + 4]);
        let h2: [f32; 2] = std::array::from_fn(|l| h4[l] + h4[l + 2]);
        assert_eq!(reference::tree_sum(&v).to_bits(), (h2[0] + h2[1]).to_bits());
        // f64: l + (l+4), then + 2, + 1.
        let v: [f64; 8] = std::array::from_fn(|l| 1.0 + l as f64 * 1e-16);
        let h4: [f64; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
        let h2: [f64; 2] = std::array::from_fn(|l| h4[l] + h4[l + 2]);
        assert_eq!(
            <f64 as Lane>::tree_sum(&v).to_bits(),
            (h2[0] + h2[1]).to_bits()
        );
    }

    #[test]
    fn kernel_choice_follows_the_stored_run() {
        assert_eq!(Kernel::for_run(Dtype::F32), Kernel::Chain);
        assert_eq!(Kernel::for_run(Dtype::F64), Kernel::Chain);
        assert_eq!(
            Kernel::of_stored(Some("mlp-runner-chain/avx2-fma"), Dtype::F32),
            Kernel::Chain
        );
        assert_eq!(
            Kernel::of_stored(Some("mlp-runner-lanes16/portable"), Dtype::F32),
            Kernel::Lanes
        );
        assert_eq!(
            Kernel::contract("mlp-runner-chain/avx512"),
            "mlp-runner-chain"
        );
        assert_eq!(
            Kernel::of_stored(Some("matrixmultiply-0.3.11/avx512"), Dtype::F64),
            Kernel::Gemm
        );
        assert_eq!(
            Kernel::of_stored(Some("mlp-runner-lanes8/avx512"), Dtype::F64),
            Kernel::Lanes
        );
        assert_eq!(Kernel::of_stored(None, Dtype::F64), Kernel::Chain);
        assert_eq!(
            Kernel::contract("mlp-runner-lanes16/avx512"),
            "mlp-runner-lanes16"
        );
        assert_eq!(
            Kernel::contract("mlp-runner-lanes8/avx2-fma"),
            "mlp-runner-lanes8"
        );
        assert_eq!(
            Kernel::contract("matrixmultiply-0.3.11/avx512"),
            "matrixmultiply-0.3.11/avx512"
        );
    }
}
