//! Generic L-lane code: the portable path, also compiled for AVX2+FMA.

use crate::core::kernel::lanes::{
    COMB_ROWS, COMB_VECS, Coef, Epilogue, Lane, Mat, Out, ROWS_A, ROWS_W, abt_tiles,
};

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
    for (i, s, j, r) in abt_tiles(a.rows, w.rows, ROWS_W) {
        // SAFETY: i + s <= a.rows and j + r <= w.rows.
        unsafe {
            if r == ROWS_W && s == ROWS_A {
                store::<T, ROWS_W, ROWS_A>(&tile::<T, ROWS_W, ROWS_A>(&a, i, &w, j), z, ldz, i, j);
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
