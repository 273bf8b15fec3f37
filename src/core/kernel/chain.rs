//! The chain kernels ("mlp-runner-chain"): the products of an SGD step under the plainest arithmetic
//! contract there is, for f32 and f64 alike, with W held in panels while a run trains.
//!
//! # The contract (what the bits are)
//! Every output element is one fused multiply-add chain over its terms in increasing order, from +0:
//! `acc = fma(x_t, y_t, acc)` for t = 0, 1, ..., the order of the textbook triple loop.
//! - [`forward`], Z = A W^T: `z[i][j] = chain over k of a[i][k] w[j][k]`.
//! - the backward product Delta^(l-1) = Delta^l W^l, `d[i][k] = chain over j of delta[i][j] w[j][k]`,
//!   and the SGD update `W[j][k] = fma(alpha, chain over i of delta[i][j] a[i][k], W[j][k])`: the
//!   [`super::combine`] of the lanes contract as it stands (its definition is this one).
//!
//! Only Z = A W^T differs from lanes16/lanes8, whose dot products sum in L lanes and a tree: there each
//! output needs a register of its own for the whole row of k and a tree at the end, and the tiles load
//! as many values as they multiply-add. Here Z is an outer-product walk: for each k, one value of A
//! broadcast against a contiguous row of a panel of W, with 10 rows of A by 2 vectors of columns in
//! flight (AVX-512) and no tree: one load of W per 20 multiply-adds. (What each form reaches is in
//! `docs/performance.md` and the changelog.)
//!
//! # Panels
//! The walk needs W's columns of Z contiguous for each k, so a training workspace keeps each W^l as
//! [`Panels`]: rows j of W in groups of [`width`] (128 bytes: 32 f32, 16 f64), each group stored as k
//! rows of 128 bytes, the last group padded with zeros. The layout changes where values live, never how
//! an element is computed: the model's own W (row-major, what is stored and exported) is packed into
//! panels before training steps and unpacked after them, bit for bit.
//!
//! Each element is computed whole by one thread, so the bits do not depend on tiling, alignment, threads
//! or instruction set; the AVX-512, AVX2+FMA, NEON (aarch64) and portable paths are tested against
//! [`mod@reference`].

use super::lanes::{Coef, Epilogue, Lane, Mat, MatMut, SharedOut, Vector, combine_raw, fits};
use super::rule::{self, Rule, RuleElem};
use super::{Implementation, implementation};
use crate::core::pool;

/// Bytes per panel row: two AVX-512 registers, four AVX2 ones.
pub const PANEL_BYTES: usize = 128;

/// Rows of W per panel for `T`: 32 in f32, 16 in f64.
pub const fn width<T>() -> usize {
    PANEL_BYTES / std::mem::size_of::<T>()
}

/// Rows of A per outer block of [`forward`], so that the block (about 256 KB) stays in L2 while the
/// panels pass by; a multiple of every tile's rows.
const A_BLOCK_BYTES: usize = 256 * 1024;
const A_BLOCK_GRANULE: usize = 60;

/// W [rows, cols] in panels of [`width`] rows: `w[j][c]` at `p * width * cols + c * width + (j - p *
/// width)` for panel p = j / width, 64-byte aligned; the padding rows of the last panel stay 0.
#[derive(Debug, Clone)]
pub struct Panels<T> {
    buf: Vec<T>,
    off: usize,
    rows: usize,
    cols: usize,
}

impl<T: Copy + Default> Panels<T> {
    /// Zeros for W of `rows` x `cols`.
    pub fn new(rows: usize, cols: usize) -> Self {
        let len = rows.div_ceil(width::<T>()) * width::<T>() * cols;
        let spare = 64 / std::mem::size_of::<T>();
        let buf = vec![T::default(); len + spare];
        let off = buf.as_ptr().align_offset(64).min(spare);
        Panels {
            buf,
            off,
            rows,
            cols,
        }
    }

    /// Rows of W.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of W.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of panels.
    pub fn count(&self) -> usize {
        self.rows.div_ceil(width::<T>())
    }

    /// Rows of W in panel `p` (the last one may have fewer than [`width`]).
    pub fn panel_rows(&self, p: usize) -> usize {
        (self.rows - p * width::<T>()).min(width::<T>())
    }

    /// The panels' values, padding included (zeros unless a rule wrote there: a rule maps a zero
    /// parameter with a zero gradient and zero state to zero).
    pub fn data(&self) -> &[T] {
        let len = self.count() * width::<T>() * self.cols;
        &self.buf[self.off..self.off + len]
    }

    /// The panels' values, mutable.
    pub fn data_mut(&mut self) -> &mut [T] {
        let len = self.count() * width::<T>() * self.cols;
        &mut self.buf[self.off..self.off + len]
    }

    /// Copy W (row-major) in. Panics if the shapes differ (a programming error).
    pub fn pack(&mut self, w: Mat<'_, T>) {
        assert!(w.rows == self.rows && w.cols == self.cols);
        assert!(fits(w.data.len(), w.rows, w.cols, w.ld));
        let (pw, cols) = (width::<T>(), self.cols);
        let data = self.data_mut();
        for j in 0..w.rows {
            let (p, v) = (j / pw, j % pw);
            let row = &w.data[j * w.ld..j * w.ld + cols];
            for (c, &x) in row.iter().enumerate() {
                data[p * pw * cols + c * pw + v] = x;
            }
        }
    }

    /// Copy W out (row-major). Panics if the shapes differ (a programming error).
    pub fn unpack(&self, w: MatMut<'_, T>) {
        assert!(w.rows == self.rows && w.cols == self.cols);
        assert!(fits(w.data.len(), w.rows, w.cols, w.ld));
        let (pw, cols) = (width::<T>(), self.cols);
        let data = self.data();
        for j in 0..w.rows {
            let (p, v) = (j / pw, j % pw);
            let row = &mut w.data[j * w.ld..j * w.ld + cols];
            for (c, x) in row.iter_mut().enumerate() {
                *x = data[p * pw * cols + c * pw + v];
            }
        }
    }
}

/// Z = A W^T with W in panels: a [n, k], z [n, h] for W [h, k]. With [`pool::threads`] > 1 and enough
/// work, the threads take the panels one at a time (each element computed whole by one: the same bits).
pub fn forward<T: Lane + Vector>(a: Mat<'_, T>, w: &Panels<T>, z: MatMut<'_, T>) {
    assert!(a.cols == w.cols && z.rows == a.rows && z.cols == w.rows);
    assert!(fits(a.data.len(), a.rows, a.cols, a.ld));
    assert!(fits(z.data.len(), z.rows, z.cols, z.ld));
    let zp = SharedOut(z.data.as_mut_ptr());
    let ldz = z.ld;
    let parts = pool::parts(a.rows * w.rows * a.cols, w.count());
    if parts <= 1 {
        // SAFETY: the asserts bound z's rows 0..n and the panels' columns.
        unsafe { forward_panels(a, w, 0..w.count(), zp, ldz) };
        return;
    }
    // Panels taken one at a time by whichever thread is free.
    pool::run_blocks(parts, w.count(), &|p| {
        // SAFETY: as above; each block writes its own panel's columns.
        unsafe { forward_panels(a, w, p..p + 1, zp, ldz) }
    });
}

/// [`forward`] on panels `range`, in blocks of rows of A that stay in L2.
///
/// # Safety
/// `z` valid for writes at i * ldz + j for i < a.rows and j in the panels' rows of W.
unsafe fn forward_panels<T: Lane + Vector>(
    a: Mat<'_, T>,
    w: &Panels<T>,
    range: std::ops::Range<usize>,
    z: SharedOut<T>,
    ldz: usize,
) {
    let row_bytes = (a.cols * std::mem::size_of::<T>()).max(1);
    let block = (A_BLOCK_BYTES / row_bytes / A_BLOCK_GRANULE).max(1) * A_BLOCK_GRANULE;
    let (pw, k) = (width::<T>(), w.cols);
    let data = w.data();
    let mut i0 = 0;
    while i0 < a.rows {
        let rows = (a.rows - i0).min(block);
        let a_block = Mat {
            data: &a.data[(i0 * a.ld).min(a.data.len())..],
            rows,
            ..a
        };
        for p in range.clone() {
            let panel = &data[p * pw * k..(p + 1) * pw * k];
            // SAFETY: the caller bounds z for these rows and the panel's columns.
            unsafe {
                let zb = z.at(i0 * ldz + p * pw);
                forward_panel(a_block, panel, w.panel_rows(p), zb, ldz);
            }
        }
        i0 += rows;
    }
}

/// One panel: z[i][v] for i < a.rows, v < cols (the panel's rows of W).
///
/// # Safety
/// `z` valid for writes at i * ldz + v for i < a.rows, v < cols; `panel` holds a.cols rows of [`width`].
unsafe fn forward_panel<T: Lane + Vector>(
    a: Mat<'_, T>,
    panel: &[T],
    cols: usize,
    z: *mut T,
    ldz: usize,
) {
    debug_assert!(panel.len() >= a.cols * width::<T>());
    // SAFETY: the CPU has the features of the implementation chosen; the caller bounds z.
    unsafe {
        match implementation() {
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx512 => x86::panel_512(a, panel.as_ptr(), cols, z, ldz),
            #[cfg(target_arch = "x86_64")]
            Implementation::Avx2Fma => x86::panel_256(a, panel.as_ptr(), cols, z, ldz),
            #[cfg(target_arch = "aarch64")]
            Implementation::Neon => neon::panel(a, panel.as_ptr(), cols, z, ldz),
            _ => portable_panel(a, panel, cols, z, ldz),
        }
    }
}

/// The portable path: the chain of each element in plain `mul_add`s, a panel row at a time.
///
/// # Safety
/// As [`forward_panel`].
unsafe fn portable_panel<T: Lane>(a: Mat<'_, T>, panel: &[T], cols: usize, z: *mut T, ldz: usize) {
    let pw = width::<T>();
    let mut acc = [T::default(); 32];
    for i in 0..a.rows {
        let row = &a.data[i * a.ld..i * a.ld + a.cols];
        acc[..cols].fill(T::default());
        for (t, &x) in row.iter().enumerate() {
            let w = &panel[t * pw..t * pw + cols];
            for (s, &y) in acc.iter_mut().zip(w) {
                *s = x.mul_add(y, *s);
            }
        }
        for (v, &s) in acc[..cols].iter().enumerate() {
            // SAFETY: the caller bounds z.
            unsafe { *z.add(i * ldz + v) = s };
        }
    }
}

/// The SGD update of W in panels: `W[j][c] = fma(alpha, chain over i of delta[i][j] a[i][c], W[j][c])`,
/// delta [n, h], a [n, k] for W [h, k]. Panels are split between threads as in [`forward`].
pub fn update<T: Lane + Vector + RuleElem>(
    delta: Mat<'_, T>,
    a: Mat<'_, T>,
    w: &mut Panels<T>,
    alpha: T,
) {
    update_then_forward(delta, a, w, alpha, None);
}

/// [`update`], then, with `next` = (A', Z'), Z' = A' W^T with the updated W ([`forward`]), a panel at a
/// time while it is still in cache: the bits of the two calls one after the other.
pub fn update_then_forward<T: Lane + Vector + RuleElem>(
    delta: Mat<'_, T>,
    a: Mat<'_, T>,
    w: &mut Panels<T>,
    alpha: T,
    next: Option<(Mat<'_, T>, MatMut<'_, T>)>,
) {
    combine_panels(delta, a, w, Mode::Epilogue(Epilogue::Axpy(alpha)), next);
}

/// An update with a rule that keeps state ([`Rule`]): for each block of a panel, the summed gradient
/// `S[j][c] = chain over i of delta[i][j] a[i][c]` into a scratch block that stays in cache, then the
/// rule on that block of W, S and each state slot (panels of W's shape, the same offsets); then, with
/// `next`, the next batch's product on the updated panel as in [`update_then_forward`]. The bits of the
/// three steps one after the other over whole matrices.
pub fn rule_then_forward<T: Lane + Vector + RuleElem>(
    delta: Mat<'_, T>,
    a: Mat<'_, T>,
    w: &mut Panels<T>,
    state: &mut [Panels<T>],
    rule: &Rule<T>,
    next: Option<(Mat<'_, T>, MatMut<'_, T>)>,
) {
    assert!(state.len() >= rule.slots() && state.len() <= 2);
    assert!(state.iter().all(|s| s.rows == w.rows && s.cols == w.cols));
    let mut slots = [None; 2];
    for (slot, s) in slots.iter_mut().zip(state.iter_mut()) {
        *slot = Some(SharedOut(s.data_mut().as_mut_ptr()));
    }
    combine_panels(delta, a, w, Mode::Rule(rule, slots), next);
}

/// What [`combine_panels`] does with each block of S.
#[derive(Clone, Copy)]
enum Mode<'a, T> {
    /// w = epilogue(S, w), in the tiles.
    Epilogue(Epilogue<T>),
    /// The rule on W, S and the state slots' buffers (panels of W's shape, same offsets).
    Rule(&'a Rule<T>, [Option<SharedOut<T>>; 2]),
}

/// `w[j][c] = epilogue(chain over i of delta[i][j] a[i][c], w[j][c])` for W in panels (or the rule of
/// [`rule_then_forward`]), then the next batch's product as in [`update_then_forward`].
fn combine_panels<T: Lane + Vector + RuleElem>(
    delta: Mat<'_, T>,
    a: Mat<'_, T>,
    w: &mut Panels<T>,
    mode: Mode<'_, T>,
    next: Option<(Mat<'_, T>, MatMut<'_, T>)>,
) {
    assert!(delta.rows == a.rows && delta.cols == w.rows && a.cols == w.cols);
    assert!(fits(delta.data.len(), delta.rows, delta.cols, delta.ld));
    assert!(fits(a.data.len(), a.rows, a.cols, a.ld));
    let (a2, z) = match next {
        Some((a2, z)) => {
            assert!(a2.cols == w.cols && z.rows == a2.rows && z.cols == w.rows);
            assert!(fits(a2.data.len(), a2.rows, a2.cols, a2.ld));
            assert!(fits(z.data.len(), z.rows, z.cols, z.ld));
            (Some(a2), Some((SharedOut(z.data.as_mut_ptr()), z.ld)))
        }
        None => (None, None),
    };
    let (pw, k, count, h) = (width::<T>(), w.cols, w.count(), w.rows);
    let wp = SharedOut(w.data_mut().as_mut_ptr());
    let next_rows = a2.map_or(0, |m| m.rows);
    let parts = pool::parts(w.rows * k * (a.rows + next_rows), count);
    // coef(c, i) = a[i][c]: the update's output rows are the k columns of A.
    let coef = Coef {
        data: a.data,
        row_stride: 1,
        term_stride: a.ld,
    };
    // Without a next product, columns of W in blocks whose columns of A stay in L1 while every panel
    // takes them (else A is read again from L2 or memory for each panel: 32 times for W^1 of 512 rows
    // in f64). With one, each panel is multiplied as soon as it is updated, so in one block.
    let c_block = if a2.is_none() {
        update_block::<T>(a.rows, k)
    } else {
        k
    };
    // Panels p0..p1.
    let run = |(p0, p1): (usize, usize)| {
        // A rule's S, one block of a panel at a time (at most RULE_BLOCK rows of pw), on the stack: the
        // steps allocate nothing.
        let mut scratch = [T::default(); RULE_BLOCK * 32];
        let blocks = |step: usize| {
            (0..k)
                .step_by(step.max(1))
                .map(move |c0| (c0, (c0 + step).min(k)))
        };
        let mut block = |p: usize, c0: usize, c1: usize| {
            // the panel's rows of W (fewer than pw in the last one)
            let cols = (h - p * pw).min(pw);
            let src = Mat {
                data: &delta.data[(p * pw).min(delta.data.len())..],
                rows: delta.rows,
                cols,
                ld: delta.ld,
            };
            let coef = Coef {
                data: &a.data[c0.min(a.data.len())..],
                ..coef
            };
            // SAFETY: panel p is k rows of pw values inside w's buffer, written by this part only;
            // its first `cols` columns are W's rows, the rest padding that is never written; rows
            // c0..c1 < k of it here. Z' columns p * pw .. + cols are inside z (asserted) and written
            // by this part only, once the panel's last rows are updated.
            unsafe {
                let panel = wp.at(p * pw * k);
                let rows = panel.add(c0 * pw);
                match mode {
                    Mode::Epilogue(epilogue) => {
                        combine_raw(coef, src, rows, c1 - c0, cols, pw, epilogue);
                    }
                    Mode::Rule(rule, slots) => {
                        let len = (c1 - c0) * pw;
                        let s = &mut scratch[..len];
                        if cols < pw {
                            // The padding of the last panel: S = 0 there, so W and state stay 0.
                            s.fill(T::default());
                        }
                        combine_raw(
                            coef,
                            src,
                            s.as_mut_ptr(),
                            c1 - c0,
                            cols,
                            pw,
                            Epilogue::Assign,
                        );
                        let block = std::slice::from_raw_parts_mut(rows, len);
                        let at = p * pw * k + c0 * pw;
                        // The state slots' blocks, on the stack (no allocation per block).
                        let mut state: [&mut [T]; 2] = [&mut [], &mut []];
                        let mut used = 0;
                        for sp in slots.iter().flatten() {
                            state[used] = std::slice::from_raw_parts_mut(sp.at(at), len);
                            used += 1;
                        }
                        rule::apply(rule, block, s, &mut state[..used]);
                    }
                }
                if let (Some(a2), Some((zp, ldz)), true) = (a2, z, c1 == k) {
                    let panel = std::slice::from_raw_parts(panel.cast_const(), pw * k);
                    forward_panel(a2, panel, cols, zp.at(p * pw), ldz);
                }
            }
        };
        // A rule goes panel by panel in small blocks, so that the reads of W and the state of one block
        // overlap the next block's S (a sequential stream the hardware prefetches) and the panel is still
        // in cache for its next product; an epilogue goes block by block across the panels (see c_block).
        match mode {
            Mode::Rule(..) => {
                for p in p0..p1 {
                    blocks(RULE_BLOCK).for_each(|(c0, c1)| block(p, c0, c1));
                }
            }
            Mode::Epilogue(_) => {
                for (c0, c1) in blocks(c_block) {
                    (p0..p1).for_each(|p| block(p, c0, c1));
                }
            }
        }
    };
    if parts <= 1 {
        run((0, count));
    } else {
        // Chunks of panels taken by whichever thread is free (each chunk's panels, and their columns of
        // Z', are written by the thread that took it).
        let chunks = count.div_ceil(PANELS_PER_CHUNK);
        pool::run_blocks(parts, chunks, &|c| {
            run((
                c * PANELS_PER_CHUNK,
                ((c + 1) * PANELS_PER_CHUNK).min(count),
            ))
        });
    }
}

/// Panels per chunk that a thread takes in an update: small enough that two threads balance (W^1 of 512
/// rows is 16 panels in f32, 32 in f64), large enough that a block of A's columns is reused across
/// panels while it is in L1 (see `update_block`).
const PANELS_PER_CHUNK: usize = 2;

/// Rows of a panel per block of an update with a rule (48 rows of 128 bytes: 6 KB of each of W, S and
/// each state slot, in L1 together), a multiple of the update's tiles. A panel row holds at most 32
/// values (f32).
const RULE_BLOCK: usize = 48;

/// Bytes of A (terms by columns of W) that a block of the update keeps in L1 while every panel takes
/// them: half of a 48 KB L1, so that the panel's rows passing through do not evict them (chosen with
/// `runner bench --kernels` among 12 to 48 KB; see the changelog).
const UPDATE_BLOCK_BYTES: usize = 24 * 1024;
/// Columns of W per block: a multiple of the update's tallest tile (12 rows), whole k when A fits.
fn update_block<T>(terms: usize, k: usize) -> usize {
    let row = terms.max(1) * std::mem::size_of::<T>();
    if row * k <= 2 * UPDATE_BLOCK_BYTES {
        return k;
    }
    (UPDATE_BLOCK_BYTES / row / 12).max(1) * 12
}

/// The register walk of [`forward`]'s tiles, generic over the instruction set's register type.
mod regs {
    use super::width;
    use crate::core::kernel::lanes::Mat;

    /// A tile compiled for one instruction set: (k, a, lda, w, ldw, z, ldz, cols), as [`tile`].
    pub(super) type Tile<T> =
        unsafe fn(usize, *const T, usize, *const T, usize, *mut T, usize, usize);

    /// One panel in tiles of up to `rows` rows of A by each half of the panel, `pick(s)` giving the tile
    /// of s rows (AVX2's 256-bit and NEON's 128-bit registers: half a panel row is their tile's width).
    ///
    /// # Safety
    /// The instruction set of `pick`'s tiles is present; as [`super::forward_panel`].
    pub(super) unsafe fn by_halves<T>(
        a: Mat<'_, T>,
        w: *const T,
        cols: usize,
        z: *mut T,
        ldz: usize,
        rows: usize,
        pick: fn(usize) -> Tile<T>,
    ) {
        let half = width::<T>() / 2;
        let mut i = 0;
        while i < a.rows {
            let s = (a.rows - i).min(rows);
            // Called through an opaque pointer so that each tile is compiled, and its registers
            // allocated, on its own.
            let f = std::hint::black_box(pick(s));
            let mut c0 = 0;
            while c0 < cols {
                // SAFETY: rows i..i+s of A and z, the panel's k rows from column c0 (half a panel row
                // is inside it); passed on from the caller.
                unsafe {
                    let ap = a.data.as_ptr().add(i * a.ld);
                    let zp = z.add(i * ldz + c0);
                    f(
                        a.cols,
                        ap,
                        a.ld,
                        w.add(c0),
                        width::<T>(),
                        zp,
                        ldz,
                        cols - c0,
                    );
                }
                c0 += half;
            }
            i += s;
        }
    }

    /// A register of one instruction set for one element type.
    ///
    /// Every method is `unsafe` for the same two reasons: it may only run on a CPU with the register's
    /// instruction set (`Zmm`: AVX-512F, `Ymm`: AVX2+FMA, `Q`: NEON; the dispatch checks it
    /// once per product), and a pointer argument must be valid for the reads or writes the method names.
    pub(super) trait Regs<T> {
        type R: Copy;
        /// Values per register.
        const LEN: usize;
        /// # Safety
        /// The register's instruction set is present.
        unsafe fn zero() -> Self::R;
        /// # Safety
        /// As [`Regs::zero`], and `p` valid for LEN reads.
        unsafe fn load(p: *const T) -> Self::R;
        /// a * b + c, rounded once.
        ///
        /// # Safety
        /// As [`Regs::zero`].
        unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R;
        /// `*p` in every value.
        ///
        /// # Safety
        /// As [`Regs::zero`], and `p` valid for one read.
        unsafe fn splat(p: *const T) -> Self::R;
        /// # Safety
        /// As [`Regs::zero`], and `p` valid for LEN writes.
        unsafe fn store(p: *mut T, v: Self::R);
        /// Store the first `n` (< LEN) values.
        ///
        /// # Safety
        /// As [`Regs::zero`], and `p` valid for `n` writes.
        unsafe fn store_first(p: *mut T, n: usize, v: Self::R);
    }

    /// R rows of A against V registers of a panel's columns: for each k, one broadcast of a[i][k] per
    /// row against the panel row's registers, each accumulator one chain over k from +0; then the first
    /// `cols` columns stored.
    ///
    /// # Safety
    /// The instruction set of `I`; `a` holds R rows of k values at stride `lda`, `w` k rows of at least
    /// V * LEN values at stride `ldw`, `z` R rows of `cols` writable values at stride `ldz`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile<T, I: Regs<T>, const R: usize, const V: usize>(
        k: usize,
        a: *const T,
        lda: usize,
        w: *const T,
        ldw: usize,
        z: *mut T,
        ldz: usize,
        cols: usize,
    ) {
        unsafe {
            let mut acc = [[I::zero(); V]; R];
            for t in 0..k {
                let row = w.add(t * ldw);
                let s: [I::R; V] = std::array::from_fn(|v| I::load(row.add(v * I::LEN)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let c = I::splat(a.add(r * lda + t));
                    for (x, y) in acc_r.iter_mut().zip(&s) {
                        *x = I::fmadd(c, *y, *x);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (v, x) in acc_r.iter().enumerate() {
                    let n = cols.saturating_sub(v * I::LEN).min(I::LEN);
                    let p = z.add(r * ldz + v * I::LEN);
                    if n == I::LEN {
                        I::store(p, *x);
                    } else if n > 0 {
                        I::store_first(p, n, *x);
                    }
                }
            }
        }
    }
}

/// AVX-512 and AVX2+FMA tiles: one generic walk over the register type of each.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::regs::{Regs, Tile, by_halves, tile};
    use super::width;
    use crate::core::kernel::lanes::Mat;
    use crate::core::kernel::lanes::simd::{avx2::Simd2, avx512::Simd};

    struct Zmm;
    struct Ymm;

    impl<T: Simd> Regs<T> for Zmm {
        type R = <T as Simd>::R;
        const LEN: usize = T::LANES;
        #[inline(always)]
        unsafe fn zero() -> Self::R {
            unsafe { <T as Simd>::zero() }
        }
        #[inline(always)]
        unsafe fn load(p: *const T) -> Self::R {
            unsafe { <T as Simd>::loadu(p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R {
            unsafe { <T as Simd>::fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const T) -> Self::R {
            unsafe { <T as Simd>::set1(*p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut T, v: Self::R) {
            unsafe { <T as Simd>::storeu(p, v) }
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut T, n: usize, v: Self::R) {
            unsafe { <T as Simd>::mask_storeu(p, T::mask(n), v) }
        }
    }

    impl<T: Simd2> Regs<T> for Ymm {
        type R = <T as Simd2>::R;
        const LEN: usize = T::HALF;
        #[inline(always)]
        unsafe fn zero() -> Self::R {
            unsafe { <T as Simd2>::zero() }
        }
        #[inline(always)]
        unsafe fn load(p: *const T) -> Self::R {
            unsafe { <T as Simd2>::loadu(p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R {
            unsafe { <T as Simd2>::fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const T) -> Self::R {
            unsafe { <T as Simd2>::set1(*p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut T, v: Self::R) {
            unsafe { <T as Simd2>::storeu(p, v) }
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut T, n: usize, v: Self::R) {
            unsafe { <T as Simd2>::store_first(p, n, v) }
        }
    }

    /// Rows of A per AVX-512 tile: 10 by 2 registers (a whole panel), 20 accumulators.
    const ROWS_512: usize = 10;
    /// Rows of A per AVX2 tile: 6 by 2 registers (half a panel), 12 accumulators of 16 registers.
    const ROWS_256: usize = 6;

    macro_rules! tiles {
        ($name:ident, $isa:ident, $bound:ident, $feature:literal, $vecs:literal) => {
            /// `tile` compiled for one instruction set.
            ///
            /// # Safety
            /// As `tile`, on a CPU with that instruction set.
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $name<T: $bound, const R: usize>(
                k: usize,
                a: *const T,
                lda: usize,
                w: *const T,
                ldw: usize,
                z: *mut T,
                ldz: usize,
                cols: usize,
            ) {
                unsafe { tile::<T, $isa, R, $vecs>(k, a, lda, w, ldw, z, ldz, cols) }
            }
        };
    }
    tiles!(tile_512, Zmm, Simd, "avx512f", 2);
    tiles!(tile_512_narrow, Zmm, Simd, "avx512f", 1);
    tiles!(tile_256, Ymm, Simd2, "avx2,fma", 2);

    /// The tile of `s` rows (1 to R) for each instruction set.
    fn pick_512<T: Simd>(s: usize) -> Tile<T> {
        match s {
            1 => tile_512::<T, 1>,
            2 => tile_512::<T, 2>,
            3 => tile_512::<T, 3>,
            4 => tile_512::<T, 4>,
            5 => tile_512::<T, 5>,
            6 => tile_512::<T, 6>,
            7 => tile_512::<T, 7>,
            8 => tile_512::<T, 8>,
            9 => tile_512::<T, 9>,
            _ => tile_512::<T, ROWS_512>,
        }
    }

    /// Rows of A per AVX-512 tile of a panel of at most one register of W's rows (W^L of 10 rows in
    /// f32): 16 by 1 register, then halves, where 10 by 2 would multiply-add 22 columns of padding
    /// (`runner bench --kernels --sizes 512,10` times the difference).
    const ROWS_NARROW: usize = 16;

    /// The narrow tile of the largest power of two rows <= `s` (at most [`ROWS_NARROW`]).
    fn pick_narrow<T: Simd>(s: usize) -> (usize, Tile<T>) {
        match s {
            1 => (1, tile_512_narrow::<T, 1>),
            2..4 => (2, tile_512_narrow::<T, 2>),
            4..8 => (4, tile_512_narrow::<T, 4>),
            8..ROWS_NARROW => (8, tile_512_narrow::<T, 8>),
            _ => (ROWS_NARROW, tile_512_narrow::<T, ROWS_NARROW>),
        }
    }

    fn pick_256<T: Simd2>(s: usize) -> Tile<T> {
        match s {
            1 => tile_256::<T, 1>,
            2 => tile_256::<T, 2>,
            3 => tile_256::<T, 3>,
            4 => tile_256::<T, 4>,
            5 => tile_256::<T, 5>,
            _ => tile_256::<T, ROWS_256>,
        }
    }

    /// One panel on AVX-512: tiles of 10 rows of A by the whole panel (of 16 rows by one register
    /// when the panel's rows of W fit one).
    ///
    /// # Safety
    /// The CPU has AVX-512F; as [`super::forward_panel`].
    pub unsafe fn panel_512<T: Simd>(
        a: Mat<'_, T>,
        w: *const T,
        cols: usize,
        z: *mut T,
        ldz: usize,
    ) {
        let narrow = cols <= T::LANES;
        let mut i = 0;
        while i < a.rows {
            let (s, f) = if narrow {
                pick_narrow::<T>(a.rows - i)
            } else {
                let s = (a.rows - i).min(ROWS_512);
                (s, pick_512::<T>(s))
            };
            // Called through an opaque pointer so that each tile is compiled, and its registers
            // allocated, on its own (as the lanes tiles).
            let f = std::hint::black_box(f);
            // SAFETY: rows i..i+s of A and z, the panel's k rows; passed on from the caller.
            unsafe {
                let ap = a.data.as_ptr().add(i * a.ld);
                f(a.cols, ap, a.ld, w, width::<T>(), z.add(i * ldz), ldz, cols);
            }
            i += s;
        }
    }

    /// One panel on AVX2+FMA: tiles of 6 rows of A by each half of the panel.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; as [`super::forward_panel`].
    pub unsafe fn panel_256<T: Simd2>(
        a: Mat<'_, T>,
        w: *const T,
        cols: usize,
        z: *mut T,
        ldz: usize,
    ) {
        // SAFETY: passed on from the caller.
        unsafe { by_halves(a, w, cols, z, ldz, ROWS_256, pick_256::<T>) }
    }
}

/// NEON tiles (aarch64): the same walk with 128-bit registers, 6 rows of A by half a panel (4
/// registers: 16 f32 or 8 f64 columns), 24 accumulators of the 32 registers.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::regs::{Regs, Tile, by_halves, tile};
    use super::width;
    use crate::core::kernel::lanes::Mat;
    use crate::core::kernel::lanes::simd::neon::Neon;

    /// A NEON register of T.
    struct Q;

    impl<T: Neon> Regs<T> for Q {
        type R = <T as Neon>::R;
        const LEN: usize = T::LEN;
        #[inline(always)]
        unsafe fn zero() -> Self::R {
            unsafe { T::zero() }
        }
        #[inline(always)]
        unsafe fn load(p: *const T) -> Self::R {
            unsafe { T::load(p) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::R, b: Self::R, c: Self::R) -> Self::R {
            unsafe { T::fmadd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn splat(p: *const T) -> Self::R {
            unsafe { T::splat(*p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut T, v: Self::R) {
            unsafe { T::store(p, v) }
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut T, n: usize, v: Self::R) {
            // Through a buffer of one register: n < LEN values written.
            let mut buf = [T::default(); 4];
            unsafe {
                T::store(buf.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
            }
        }
    }

    /// Rows of A per tile.
    const ROWS: usize = 6;
    /// Registers per tile row: half a panel row.
    const VECS: usize = 4;

    /// `tile` of R rows on NEON.
    ///
    /// # Safety
    /// As `tile`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_q<T: Neon, const R: usize>(
        k: usize,
        a: *const T,
        lda: usize,
        w: *const T,
        ldw: usize,
        z: *mut T,
        ldz: usize,
        cols: usize,
    ) {
        unsafe { tile::<T, Q, R, VECS>(k, a, lda, w, ldw, z, ldz, cols) }
    }

    fn pick<T: Neon>(s: usize) -> Tile<T> {
        match s {
            1 => tile_q::<T, 1>,
            2 => tile_q::<T, 2>,
            3 => tile_q::<T, 3>,
            4 => tile_q::<T, 4>,
            5 => tile_q::<T, 5>,
            _ => tile_q::<T, ROWS>,
        }
    }

    /// One panel on NEON: tiles of 6 rows of A by each half of the panel (a half whose rows of W are
    /// all padding is skipped).
    ///
    /// # Safety
    /// As [`super::forward_panel`].
    pub unsafe fn panel<T: Neon>(a: Mat<'_, T>, w: *const T, cols: usize, z: *mut T, ldz: usize) {
        debug_assert_eq!(width::<T>() / 2, VECS * T::LEN);
        // SAFETY: passed on from the caller.
        unsafe { by_halves(a, w, cols, z, ldz, ROWS, pick::<T>) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::random;
    use super::super::{Implementation, reference, supported};
    use super::*;

    fn mat<T>(data: &[T], rows: usize, cols: usize) -> Mat<'_, T> {
        Mat {
            data,
            rows,
            cols,
            ld: cols,
        }
    }

    /// Every implementation this CPU runs against the reference, for the forward product, the update
    /// and the two fused, over shapes with every kind of edge (rows of A not a multiple of any tile,
    /// a last panel of 1 to width - 1 rows, k of 1, A taller than one outer block).
    fn chains_give_the_reference_bits_in<T: Lane + Vector + RuleElem + From<f32> + Into<f64>>(
        bits: fn(&[T]) -> Vec<u64>,
    ) {
        let pw = width::<T>();
        let alpha = T::from(-0.037);
        for (n, h, k) in [
            (1, 1, 1),
            (3, 7, 15),
            (10, pw, 33),
            (13, pw + 1, 64),
            (10, 2 * pw + 5, 784),
            (7, 3 * pw - 1, 17),
            (128, 10, 100),
            (400, pw + 3, 300),
            (23, 4 * pw, 9),
        ] {
            let (a, w, d) = (
                random::<T>(n * k, 1),
                random::<T>(h * k, 2),
                random::<T>(n * h, 3),
            );
            // the next batch: other sizes than this one (at most one tile of rows, and more)
            let n2 = (n * 7) % 11 + 1;
            let a2 = random::<T>(n2 * k, 4);
            let (am, wm, dm, a2m) = (mat(&a, n, k), mat(&w, h, k), mat(&d, n, h), mat(&a2, n2, k));
            let mut want = vec![T::default(); n * h];
            reference::chain::forward(am, wm, out(&mut want, n, h));
            // The update as the lanes contract's combine defines it, then the next product.
            let mut want_w = w.clone();
            let coef = Coef {
                data: &d,
                row_stride: 1,
                term_stride: h,
            };
            reference::combine(coef, am, out(&mut want_w, h, k), Epilogue::Axpy(alpha));
            let mut want_next = vec![T::default(); n2 * h];
            reference::chain::forward(a2m, mat(&want_w, h, k), out(&mut want_next, n2, h));
            // the reference is the product it claims to be
            for i in 0..n {
                for j in 0..h {
                    let exact: f64 = (0..k)
                        .map(|t| a[i * k + t].into() * w[j * k + t].into())
                        .sum();
                    assert!(
                        (want[i * h + j].into() - exact).abs() < 1e-4,
                        "forward value"
                    );
                }
            }
            for imp in supported() {
                let mut panels = Panels::<T>::new(h, k);
                panels.pack(wm);
                let mut round = vec![T::default(); h * k];
                panels.unpack(out(&mut round, h, k));
                assert_eq!(bits(&round), bits(&w), "pack, unpack");
                let mut z = vec![T::default(); n * h];
                with_impl(imp, || forward(am, &panels, out(&mut z, n, h)));
                assert_eq!(bits(&z), bits(&want), "forward {imp:?} n={n} h={h} k={k}");
                let mut p2 = panels.clone();
                with_impl(imp, || update(dm, am, &mut p2, alpha));
                p2.unpack(out(&mut round, h, k));
                assert_eq!(
                    bits(&round),
                    bits(&want_w),
                    "update {imp:?} n={n} h={h} k={k}"
                );
                let mut z2 = vec![T::default(); n2 * h];
                let next = Some((a2m, out(&mut z2, n2, h)));
                with_impl(imp, || {
                    update_then_forward(dm, am, &mut panels, alpha, next)
                });
                panels.unpack(out(&mut round, h, k));
                assert_eq!(bits(&round), bits(&want_w), "fused update {imp:?}");
                assert_eq!(
                    bits(&z2),
                    bits(&want_next),
                    "fused forward {imp:?} n={n} h={h} k={k}"
                );
            }
        }
    }

    fn out<T>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
        MatMut {
            data,
            rows,
            cols,
            ld: cols,
        }
    }

    /// Run `f` with the kernels' implementation forced to `imp` on this thread.
    fn with_impl<R>(imp: Implementation, f: impl FnOnce() -> R) -> R {
        super::super::with_implementation(imp, f)
    }

    #[test]
    fn chains_give_the_reference_bits() {
        chains_give_the_reference_bits_in::<f32>(|v| {
            v.iter().map(|x| u64::from(x.to_bits())).collect()
        });
    }

    #[test]
    fn chains_give_the_reference_bits_in_f64() {
        chains_give_the_reference_bits_in::<f64>(|v| v.iter().map(|x| x.to_bits()).collect());
    }

    #[test]
    fn panels_hold_w_in_groups_of_128_bytes() {
        assert_eq!(width::<f32>(), 32);
        assert_eq!(width::<f64>(), 16);
        let w: Vec<f32> = (0..40 * 3).map(|x| x as f32).collect();
        let mut p = Panels::<f32>::new(40, 3);
        p.pack(mat(&w, 40, 3));
        assert_eq!(p.count(), 2);
        assert_eq!((p.panel_rows(0), p.panel_rows(1)), (32, 8));
        // w[j][c] at p * 32 * 3 + c * 32 + (j - 32 p); the 24 padding rows of panel 1 are 0
        assert_eq!(p.data()[32 + 5], w[5 * 3 + 1]);
        assert_eq!(p.data()[32 * 3 + 2 * 32 + 7], w[39 * 3 + 2]);
        assert_eq!(p.data()[32 * 3 + 8], 0.0);
        assert_eq!(p.data().as_ptr().align_offset(64), 0);
    }
}
