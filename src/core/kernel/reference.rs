//! Both contracts written plainly, one element at a time: the reference the fast paths are tested
//! against (the lanes contract's dot products and combinations here, the chain contract's product in
//! [`chain`]).
//!
//! Imports only the lanes types.

use super::lanes::{Coef, Epilogue, Lane, Mat, MatMut};

/// One `z[i][j]` of [`super::lanes::abt`].
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

/// The chain contract written plainly, one element at a time (its `combine` is the one above).
pub mod chain {
    use crate::core::kernel::lanes::{Lane, Mat, MatMut};

    /// Z = A W^T, each element one chain over k from +0 (W row-major).
    pub fn forward<T: Lane>(a: Mat<'_, T>, w: Mat<'_, T>, z: MatMut<'_, T>) {
        for i in 0..a.rows {
            for j in 0..w.rows {
                let mut acc = T::default();
                for t in 0..a.cols {
                    acc = a.data[i * a.ld + t].mul_add(w.data[j * w.ld + t], acc);
                }
                z.data[i * z.ld + j] = acc;
            }
        }
    }
}
