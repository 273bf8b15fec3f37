//! The tutorial's algorithm, kept as the reference the batched code is tested (and benchmarked) against:
//! one sample at a time, in f64, forward, backprop, and the sum of the per-sample gradients.

use ndarray::{Array2, Axis};

use crate::core::config::Activation;
use crate::core::model::Mlp;

/// The tutorial's algorithm, one sample at a time, in f64: forward, backprop, sum of per-sample gradients.
pub fn per_sample_gradients(m: &Mlp<f64>, x: &Array2<f64>, labels: &[u8]) -> Mlp<f64> {
    let mut sum = m.zeros_like();
    for (xi, &y) in x.axis_iter(Axis(0)).zip(labels) {
        let mut acts = vec![xi.to_owned()];
        let last = m.layers.len();
        for (l, layer) in m.layers.iter().enumerate() {
            let z = layer.w.dot(&acts[l]) + &layer.b;
            let a = if l + 1 == last {
                let mx = z.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let e = z.mapv(|v| (v - mx).exp());
                &e / e.sum()
            } else {
                z.mapv(|v| match m.activation {
                    Activation::Relu => v.max(0.0),
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Tanh => v.tanh(),
                })
            };
            acts.push(a);
        }
        let mut delta = acts[last].clone();
        delta[y as usize] -= 1.0;
        for l in (0..last).rev() {
            let gw = delta
                .view()
                .insert_axis(Axis(1))
                .dot(&acts[l].view().insert_axis(Axis(0)));
            sum.layers[l].w += &gw;
            sum.layers[l].b += &delta;
            if l > 0 {
                let a = &acts[l];
                let deriv = a.mapv(|a| match m.activation {
                    Activation::Relu => f64::from(a > 0.0),
                    Activation::Sigmoid => a * (1.0 - a),
                    Activation::Tanh => 1.0 - a * a,
                });
                delta = m.layers[l].w.t().dot(&delta) * deriv;
            }
        }
    }
    sum
}

/// One SGD step the tutorial's way: w -= (lr / n) * sum of per-sample gradients.
pub fn sgd_step(m: &mut Mlp<f64>, x: &Array2<f64>, labels: &[u8], learning_rate: f64) {
    let g = per_sample_gradients(m, x, labels);
    let scale = learning_rate / labels.len() as f64;
    for (layer, grad) in m.layers.iter_mut().zip(&g.layers) {
        layer.w.scaled_add(-scale, &grad.w);
        layer.b.scaled_add(-scale, &grad.b);
    }
}

/// The state of [`optimizer_step`]: per layer, per slot, arrays shaped like W^l and b^l.
#[derive(Debug, Clone, Default)]
pub struct OptimizerState {
    /// Steps taken (t after the last step).
    pub steps: u64,
    pub w: Vec<Vec<Array2<f64>>>,
    pub b: Vec<Vec<ndarray::Array1<f64>>>,
}

/// One step of `[optimizer]` the textbook way, for the tests of the batched rules: g = (1 / n) * sum
/// of per-sample gradients, then for each parameter, with lr the step's rate `learning_rate`:
/// SGD: g += lambda w; v = mu v + g; d = v (or g + mu v, Nesterov); w -= lr d.
/// Adam: (AdamW: w -= lr lambda w first; Adam: g += lambda w); m = b1 m + (1 - b1) g;
/// v = b2 v + (1 - b2) g^2; w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t counted from 1.
pub fn optimizer_step(
    m: &mut Mlp<f64>,
    state: &mut OptimizerState,
    opt: &crate::core::config::OptimizerSpec,
    x: &Array2<f64>,
    labels: &[u8],
    learning_rate: f64,
) {
    use crate::core::config::OptimizerKind;
    let g = per_sample_gradients(m, x, labels);
    let n = labels.len() as f64;
    state.steps += 1;
    let t = state.steps as i32;
    let slots = match opt.kind {
        OptimizerKind::Sgd => 1,
        _ => 2,
    };
    if state.w.is_empty() {
        state.w = m
            .layers
            .iter()
            .map(|l| vec![Array2::zeros(l.w.raw_dim()); slots])
            .collect();
        state.b = m
            .layers
            .iter()
            .map(|l| vec![ndarray::Array1::zeros(l.b.raw_dim()); slots])
            .collect();
    }
    // One parameter p with its gradient sum s and its slots, element by element.
    let step = |p: &mut f64, s: f64, slot: &mut [&mut f64]| {
        let mut grad = s / n;
        match opt.kind {
            OptimizerKind::Sgd => {
                grad += opt.weight_decay * *p;
                *slot[0] = opt.momentum * *slot[0] + grad;
                let d = if opt.nesterov {
                    grad + opt.momentum * *slot[0]
                } else {
                    *slot[0]
                };
                *p -= learning_rate * d;
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                if opt.kind == OptimizerKind::Adamw {
                    *p -= learning_rate * opt.weight_decay * *p;
                } else {
                    grad += opt.weight_decay * *p;
                }
                *slot[0] = opt.beta1 * *slot[0] + (1.0 - opt.beta1) * grad;
                *slot[1] = opt.beta2 * *slot[1] + (1.0 - opt.beta2) * grad * grad;
                let m_hat = *slot[0] / (1.0 - opt.beta1.powi(t));
                let v_hat = *slot[1] / (1.0 - opt.beta2.powi(t));
                *p -= learning_rate * m_hat / (v_hat.sqrt() + opt.eps);
            }
        }
    };
    for (l, (layer, grad)) in m.layers.iter_mut().zip(&g.layers).enumerate() {
        for (i, (p, &s)) in layer.w.iter_mut().zip(&grad.w).enumerate() {
            let mut slot: Vec<&mut f64> = state.w[l]
                .iter_mut()
                .map(|a| &mut a.as_slice_mut().expect("standard layout")[i])
                .collect();
            step(p, s, &mut slot);
        }
        for (i, (p, &s)) in layer.b.iter_mut().zip(&grad.b).enumerate() {
            let mut slot: Vec<&mut f64> = state.b[l]
                .iter_mut()
                .map(|a| &mut a.as_slice_mut().expect("standard layout")[i])
                .collect();
            step(p, s, &mut slot);
        }
    }
}
