//! The multilayer perceptron's parameters: W^l \[n_l, n_(l-1)\] and b^l \[n_l\] for l = 1..L, their
//! initialisation from the init stream, and [`Snapshot`], the dtype-erased copy that is stored and hashed.

use ndarray::{Array1, Array2};
use sha2::{Digest, Sha256};

use crate::core::config::{Activation, Dtype, Init};
use crate::core::real::Real;
use crate::core::real::aligned_zeros;
use crate::core::rng::StreamRng;
use crate::text::hex;

/// One layer's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<F> {
    /// W^l: [n_l, n_(l-1)] (out, in), as in the tutorial.
    pub w: Array2<F>,
    /// b^l: \[n_l\].
    pub b: Array1<F>,
}

/// The network: hidden layers use `activation`, the output layer softmax.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<F> {
    pub layers: Vec<Layer<F>>,
    pub activation: Activation,
}

/// A dtype-erased copy of all parameters, as stored: per layer the weight then the bias, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub dtype: Dtype,
    pub tensors: Vec<Tensor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// 1-based layer index l.
    pub layer: usize,
    /// "weight" or "bias".
    pub param: &'static str,
    pub shape: Vec<usize>,
    /// Little-endian values, row-major.
    pub data: Vec<u8>,
}

impl Snapshot {
    /// Layer widths n_0 .. n_L as the tensors' shapes give them (weights are [out, in]).
    pub fn sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = self
            .tensors
            .first()
            .and_then(|t| t.shape.get(1).copied())
            .into_iter()
            .collect();
        sizes.extend(
            self.tensors
                .iter()
                .filter(|t| t.param == "weight")
                .filter_map(|t| t.shape.first().copied()),
        );
        sizes
    }

    /// SHA-256 over the tensors' bytes in order (W^1, b^1, W^2, b^2, ...): the run's weights hash.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for t in &self.tensors {
            h.update(&t.data);
        }
        hex(&h.finalize())
    }
}

/// The initial parameters of a run with this config: what training starts from, drawn from the init
/// stream of its seed. A pure function of the seed, the sizes, the init, the dtype and the elementary
/// functions (`math`: the run's), so the store may keep their hash only and regenerate them on demand.
pub fn initial_snapshot(
    cfg: &crate::core::config::RunConfig,
    math: crate::core::math::Math,
) -> Snapshot {
    let m = &cfg.model;
    let mut rng = StreamRng::new(cfg.train.seed, crate::core::rng::Stream::Init).with_math(math);
    match m.dtype {
        Dtype::F32 => Mlp::<f32>::init(&m.sizes, m.activation, m.init, &mut rng).snapshot(),
        Dtype::F64 => Mlp::<f64>::init(&m.sizes, m.activation, m.init, &mut rng).snapshot(),
    }
}

impl<F: Real> Mlp<F> {
    /// Draw initial parameters from the init stream, layer by layer, W^l row-major then b^l.
    pub fn init(sizes: &[usize], activation: Activation, init: Init, rng: &mut StreamRng) -> Self {
        let layers = sizes
            .windows(2)
            .map(|w| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let std = match init {
                    Init::He => (2.0 / fan_in as f64).sqrt(),
                    Init::Xavier => (2.0 / (fan_in + fan_out) as f64).sqrt(),
                    Init::Normal => 1.0,
                };
                let w = Array2::from_shape_simple_fn((fan_out, fan_in), || {
                    F::from_f64(std * rng.normal())
                });
                let b = match init {
                    Init::Normal => {
                        Array1::from_shape_simple_fn(fan_out, || F::from_f64(rng.normal()))
                    }
                    Init::He | Init::Xavier => Array1::zeros(fan_out),
                };
                Layer { w, b }
            })
            .collect();
        Mlp { layers, activation }
    }

    /// A model of the same shape with every parameter zero (used to accumulate gradients).
    pub fn zeros_like(&self) -> Self {
        Mlp {
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    w: Array2::zeros(l.w.raw_dim()),
                    b: Array1::zeros(l.b.raw_dim()),
                })
                .collect(),
            activation: self.activation,
        }
    }

    /// Move every weight matrix to a 64-byte aligned allocation (see [`aligned_zeros`]): speed only.
    pub fn realign(&mut self) {
        for l in &mut self.layers {
            let mut w = aligned_zeros(l.w.nrows(), l.w.ncols());
            w.assign(&l.w);
            l.w = w;
        }
    }

    /// Layer widths n_0 .. n_L.
    pub fn sizes(&self) -> Vec<usize> {
        let mut s = vec![self.layers[0].w.ncols()];
        s.extend(self.layers.iter().map(|l| l.w.nrows()));
        s
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut tensors = Vec::with_capacity(2 * self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            for (param, view, shape) in [
                ("weight", l.w.as_slice(), l.w.shape().to_vec()),
                ("bias", l.b.as_slice(), l.b.shape().to_vec()),
            ] {
                let mut data = Vec::new();
                // Parameters are always in standard layout; the fallback only guards the invariant.
                match view {
                    Some(xs) => F::extend_le(xs, &mut data),
                    None => F::extend_le(&l.w.iter().copied().collect::<Vec<_>>(), &mut data),
                }
                tensors.push(Tensor {
                    layer: i + 1,
                    param,
                    shape,
                    data,
                });
            }
        }
        Snapshot {
            dtype: F::DTYPE,
            tensors,
        }
    }

    /// Rebuild a model from a [`Snapshot`] of the same dtype.
    pub fn from_snapshot(s: &Snapshot, activation: Activation) -> Option<Self> {
        if s.dtype != F::DTYPE || !s.tensors.len().is_multiple_of(2) {
            return None;
        }
        let layers = s
            .tensors
            .chunks_exact(2)
            .map(|pair| {
                let (w, b) = (&pair[0], &pair[1]);
                let w = Array2::from_shape_vec((w.shape[0], *w.shape.get(1)?), F::from_le(&w.data))
                    .ok()?;
                let b = Array1::from_vec(F::from_le(&b.data));
                (b.len() == w.nrows()).then_some(Layer { w, b })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Mlp { layers, activation })
    }
}
