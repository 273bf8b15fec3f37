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
