//! The float types a model is trained in (f32, f64): conversions, little-endian bytes as stored, and the
//! hooks through which their products reach the kernels of [`crate::core::kernel`] (the chain kernels,
//! and the lanes kernels: lanes16 for f32, lanes8 for f64).

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, s};

use crate::core::config::Dtype;
use crate::core::kernel;

/// The float types a model can be trained in.
pub trait Real:
    ndarray::LinalgScalar + num_traits::Float + Default + Send + Sync + std::fmt::Debug + 'static
{
    const DTYPE: Dtype;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Append the little-endian bytes of `xs`.
    fn extend_le(xs: &[Self], out: &mut Vec<u8>);
    /// Read little-endian bytes written by [`Real::extend_le`].
    fn from_le(bytes: &[u8]) -> Vec<Self>;
    /// Z = A W^T with the lanes kernel ([`crate::core::kernel::abt`]); false if this type has none.
    fn lanes_abt(
        _a: ArrayView2<'_, Self>,
        _w: ArrayView2<'_, Self>,
        _z: ArrayViewMut2<'_, Self>,
    ) -> bool {
        false
    }
    /// `out[r][c] = sum_t coef[r * row_stride + t * term_stride] src[t][c]`, assigned (`alpha` None) or
    /// added as out = fma(alpha, sum, out), with the lanes kernel ([`crate::core::kernel::combine`]); false if
    /// this type has none.
    fn lanes_combine(
        _coef: (&[Self], usize, usize),
        _src: ArrayView2<'_, Self>,
        _out: ArrayViewMut2<'_, Self>,
        _alpha: Option<Self>,
    ) -> bool {
        false
    }
    /// The SGD update `w[r][c] = fma(alpha, sum_t coef[r * row_stride + t * term_stride] src[t][c], w[r][c])`
    /// and then Z = A W^T with the updated W, in one pass over W
    /// ([`crate::core::kernel::update_then_abt`]); false if this type has no lanes kernel.
    /// Z = A W^T with W in panels, on the chain kernels ([`kernel::chain::forward`]); false if this
    /// type has none or a view is not contiguous.
    fn chain_forward(
        _a: ArrayView2<'_, Self>,
        _w: &kernel::chain::Panels<Self>,
        _z: ArrayViewMut2<'_, Self>,
    ) -> bool {
        false
    }
    /// The SGD update of W in panels, then the next product if `next` is given
    /// ([`kernel::chain::update_then_forward`]); false as [`Real::chain_forward`].
    fn chain_update(
        _delta: ArrayView2<'_, Self>,
        _a: ArrayView2<'_, Self>,
        _w: &mut kernel::chain::Panels<Self>,
        _alpha: Self,
        _next: Option<(ArrayView2<'_, Self>, ArrayViewMut2<'_, Self>)>,
    ) -> bool {
        false
    }
    fn lanes_update_abt(
        _coef: (&[Self], usize, usize),
        _src: ArrayView2<'_, Self>,
        _w: ArrayViewMut2<'_, Self>,
        _alpha: Self,
        _a: ArrayView2<'_, Self>,
        _z: ArrayViewMut2<'_, Self>,
    ) -> bool {
        false
    }
}

/// A contiguous row-major view as a kernel matrix.
fn mat<T>(a: ArrayView2<'_, T>) -> Option<kernel::Mat<'_, T>> {
    let (rows, cols) = a.dim();
    let data = a.to_slice()?;
    Some(kernel::Mat {
        data,
        rows,
        cols,
        ld: cols,
    })
}

/// Z = A W^T through the lanes kernel, for contiguous views; false otherwise.
fn abt_lanes<T: kernel::Lane + kernel::Vector>(
    a: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    mut z: ArrayViewMut2<'_, T>,
) -> bool {
    let (rows, cols) = z.dim();
    match (mat(a), mat(w), z.as_slice_mut()) {
        (Some(a), Some(w), Some(data)) => {
            kernel::abt(
                a,
                w,
                kernel::MatMut {
                    data,
                    rows,
                    cols,
                    ld: cols,
                },
            );
            true
        }
        _ => false,
    }
}

/// Rows as combinations of rows through the lanes kernel, for contiguous views; false otherwise.
fn combine_lanes<T: kernel::Lane + kernel::Vector>(
    (data, row_stride, term_stride): (&[T], usize, usize),
    src: ArrayView2<'_, T>,
    mut out: ArrayViewMut2<'_, T>,
    alpha: Option<T>,
) -> bool {
    let (rows, cols) = out.dim();
    let coef = kernel::Coef {
        data,
        row_stride,
        term_stride,
    };
    let epilogue = alpha.map_or(kernel::Epilogue::Assign, kernel::Epilogue::Axpy);
    match (mat(src), out.as_slice_mut()) {
        (Some(src), Some(data)) => {
            kernel::combine(
                coef,
                src,
                kernel::MatMut {
                    data,
                    rows,
                    cols,
                    ld: cols,
                },
                epilogue,
            );
            true
        }
        _ => false,
    }
}

/// The SGD update and the next product through the lanes kernels, for contiguous views; false otherwise.
fn update_abt_lanes<T: kernel::Lane + kernel::Vector>(
    (data, row_stride, term_stride): (&[T], usize, usize),
    src: ArrayView2<'_, T>,
    mut w: ArrayViewMut2<'_, T>,
    alpha: T,
    a: ArrayView2<'_, T>,
    mut z: ArrayViewMut2<'_, T>,
) -> bool {
    let ((rows, cols), (zr, zc)) = (w.dim(), z.dim());
    let coef = kernel::Coef {
        data,
        row_stride,
        term_stride,
    };
    match (mat(src), mat(a), w.as_slice_mut(), z.as_slice_mut()) {
        (Some(src), Some(a), Some(wd), Some(zd)) => {
            let w = kernel::MatMut {
                data: wd,
                rows,
                cols,
                ld: cols,
            };
            let z = kernel::MatMut {
                data: zd,
                rows: zr,
                cols: zc,
                ld: zc,
            };
            kernel::update_then_abt(coef, src, w, alpha, a, z);
            true
        }
        _ => false,
    }
}

/// The [`Real`] hooks of a type with lanes kernels: each product through them, for contiguous views.
fn mat_mut<T>(mut z: ArrayViewMut2<'_, T>) -> Option<kernel::MatMut<'_, T>> {
    let (rows, cols) = z.dim();
    // as_slice_mut borrows z; into_slice keeps the lifetime of the view
    z.as_slice_mut()?;
    let data = z.into_slice()?;
    Some(kernel::MatMut {
        data,
        rows,
        cols,
        ld: cols,
    })
}

fn forward_chain<T: kernel::Lane + kernel::Vector>(
    a: ArrayView2<'_, T>,
    w: &kernel::chain::Panels<T>,
    z: ArrayViewMut2<'_, T>,
) -> bool {
    match (mat(a), mat_mut(z)) {
        (Some(a), Some(z)) => {
            kernel::chain::forward(a, w, z);
            true
        }
        _ => false,
    }
}

fn update_chain<T: kernel::Lane + kernel::Vector>(
    delta: ArrayView2<'_, T>,
    a: ArrayView2<'_, T>,
    w: &mut kernel::chain::Panels<T>,
    alpha: T,
    next: Option<(ArrayView2<'_, T>, ArrayViewMut2<'_, T>)>,
) -> bool {
    let next = match next {
        Some((a2, z)) => match (mat(a2), mat_mut(z)) {
            (Some(a2), Some(z)) => Some((a2, z)),
            _ => return false,
        },
        None => None,
    };
    match (mat(delta), mat(a)) {
        (Some(d), Some(a)) => {
            kernel::chain::update_then_forward(d, a, w, alpha, next);
            true
        }
        _ => false,
    }
}

macro_rules! lanes_hooks {
    ($t:ty) => {
        fn chain_forward(
            a: ArrayView2<'_, $t>,
            w: &kernel::chain::Panels<$t>,
            z: ArrayViewMut2<'_, $t>,
        ) -> bool {
            forward_chain(a, w, z)
        }
        fn chain_update(
            delta: ArrayView2<'_, $t>,
            a: ArrayView2<'_, $t>,
            w: &mut kernel::chain::Panels<$t>,
            alpha: $t,
            next: Option<(ArrayView2<'_, $t>, ArrayViewMut2<'_, $t>)>,
        ) -> bool {
            update_chain(delta, a, w, alpha, next)
        }
        fn lanes_abt(
            a: ArrayView2<'_, $t>,
            w: ArrayView2<'_, $t>,
            z: ArrayViewMut2<'_, $t>,
        ) -> bool {
            abt_lanes(a, w, z)
        }
        fn lanes_combine(
            coef: (&[$t], usize, usize),
            src: ArrayView2<'_, $t>,
            out: ArrayViewMut2<'_, $t>,
            alpha: Option<$t>,
        ) -> bool {
            combine_lanes(coef, src, out, alpha)
        }
        fn lanes_update_abt(
            coef: (&[$t], usize, usize),
            src: ArrayView2<'_, $t>,
            w: ArrayViewMut2<'_, $t>,
            alpha: $t,
            a: ArrayView2<'_, $t>,
            z: ArrayViewMut2<'_, $t>,
        ) -> bool {
            update_abt_lanes(coef, src, w, alpha, a, z)
        }
    };
}

impl Real for f32 {
    const DTYPE: Dtype = Dtype::F32;
    lanes_hooks!(f32);
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn extend_le(xs: &[Self], out: &mut Vec<u8>) {
        out.reserve(xs.len() * 4);
        xs.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    fn from_le(bytes: &[u8]) -> Vec<Self> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

impl Real for f64 {
    const DTYPE: Dtype = Dtype::F64;
    lanes_hooks!(f64);
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn extend_le(xs: &[Self], out: &mut Vec<u8>) {
        out.reserve(xs.len() * 8);
        xs.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    fn from_le(bytes: &[u8]) -> Vec<Self> {
        bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }
}

/// A zero [rows, cols] matrix whose first element is 64-byte aligned (a cache line: the kernels' loads of a
/// row then never straddle two lines when the row length is a multiple of 16 floats). Alignment changes
/// speed only, never results.
pub fn aligned_zeros<F: Real>(rows: usize, cols: usize) -> Array2<F> {
    let len = rows * cols;
    let spare = 64 / std::mem::size_of::<F>();
    let v = vec![F::zero(); len + spare];
    let off = v.as_ptr().align_offset(64).min(spare);
    let flat = Array1::from_vec(v).slice_move(s![off..off + len]);
    // A contiguous vector of rows * cols elements always has that shape.
    flat.into_shape_with_order((rows, cols))
        .unwrap_or_else(|_| Array2::zeros((rows, cols)))
}
