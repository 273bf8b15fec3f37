//! The lanes contract's tests: every implementation against the one-element-at-a-time reference.

use super::lanes::simd::portable;
#[cfg(target_arch = "x86_64")]
use super::lanes::simd::{avx2, avx512};
use super::lanes::*;
use super::*;

/// `len` values in [-0.5, 0.5) from a xorshift stream (also the chain kernels' tests').
pub(crate) fn random<T: From<f32>>(len: usize, seed: u64) -> Vec<T> {
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
                    // NEON: the lanes contract's Z = A W^T is the portable code; combine its own.
                    #[cfg(target_arch = "aarch64")]
                    Implementation::Neon => {
                        portable::abt(am, wm, zp, h);
                        crate::core::kernel::lanes::simd::neon::combine(coef, am, om, epi);
                    }
                    _ => unreachable!("{imp:?} is not supported here"),
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
