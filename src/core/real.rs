//! The float types a model is trained in (f32, f64): conversions, little-endian bytes as stored, and the
//! bridge through which their products reach the kernels of [`crate::core::kernel`].

use ndarray::{Array1, Array2, s};

use crate::core::config::Dtype;
use crate::core::kernel::rule::RuleElem;
use crate::core::kernel::{self, Kernel, products::Products};
use crate::core::math::Elementary;

/// The float types a model can be trained in.
pub trait Real:
    ndarray::LinalgScalar
    + num_traits::Float
    + RuleElem
    + Elementary
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    const DTYPE: Dtype;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Append the little-endian bytes of `xs`.
    fn extend_le(xs: &[Self], out: &mut Vec<u8>);
    /// Read little-endian bytes written by [`Real::extend_le`].
    fn from_le(bytes: &[u8]) -> Vec<Self>;
    /// The matrix products of `kernel` in this type, for a network with layer sizes `sizes`
    /// (`training`: with what backward passes need). The one bridge from a float type to the kernels
    /// (`core::kernel::products::build`), whose element traits are the crate's own.
    fn products(kernel: Kernel, sizes: &[usize], training: bool) -> Box<dyn Products<Self>>;
}

macro_rules! products {
    ($t:ty) => {
        fn products(kernel: Kernel, sizes: &[usize], training: bool) -> Box<dyn Products<$t>> {
            kernel::products::build(kernel, sizes, training)
        }
    };
}

impl Real for f32 {
    const DTYPE: Dtype = Dtype::F32;
    products!(f32);
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
    products!(f64);
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
