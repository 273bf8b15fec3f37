//! The multilayer perceptron: parameters, initialisation, and batched forward and backward passes.
//!
//! Notation (the tutorial's): layer l = 1..L has weights W^l of shape \[n_l, n_(l-1)\] and biases b^l \[n_l\].
//! For one sample, z^l = W^l a^(l-1) + b^l and a^l = act(z^l), with a^0 = x and a^L = softmax(z^L).
//! With cross-entropy loss C = -log a^L_y the output error is delta^L = a^L - y (y one-hot), and
//! delta^l = (W^(l+1))^T delta^(l+1) * act'(z^l). The gradients are dC/dW^l = delta^l (a^(l-1))^T and
//! dC/db^l = delta^l.
//!
//! Here a batch of n samples is processed at once, one sample per row: A^l is [n, n_l], so
//! Z^l = A^(l-1) (W^l)^T + b^l, Delta^(l-1) = (Delta^l W^l) * act'(Z^(l-1)), and the summed gradient is
//! (Delta^l)^T A^(l-1). SGD, w -= (lr / n) * sum of per-sample gradients, is fused into that last product
//! (W <- W + (-lr / n) Delta^T A), so W is read and written once per step.
//!
//! The products run on the run's [`Kernel`], through [`Products`], chosen once when the workspace is
//! built: the chain kernels (every new run, f32 and f64: each W^l held in panels while steps run, the
//! model's W^l synced after them), the lanes kernels (runs of earlier versions), both the same bits on
//! every CPU, or matrixmultiply's GEMM (f64 runs of versions before lanes8).

use std::sync::Mutex;

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, s};

use crate::core::config::Activation;
use crate::core::data::SplitRef;
use crate::core::kernel::Kernel;
use crate::core::kernel::products::Products;
use crate::core::kernel::rule::{self, Rule};
use crate::core::math::Math;
use crate::core::model::Mlp;
use crate::core::model::{Snapshot, Tensor};
use crate::core::pool;
use crate::core::real::{Real, aligned_zeros};
use crate::core::rng::dropout_bits;

pub enum Update<'a, F> {
    /// Plain SGD step: w -= (lr / n) * sum over the batch of per-sample gradients, fused into the gradient
    /// product ([`Rule::Plain`] with alpha = -lr / n).
    Sgd { learning_rate: f64 },
    /// One step of a run's optimizer, with its coefficients for this batch (`core::optim`).
    Rule(Rule<F>),
    /// Store the batch's summed gradients (dC/dW^l, dC/db^l) in a model-shaped buffer; the model is unchanged.
    Gradient(&'a mut Mlp<F>),
}

/// Loss and correct predictions over some rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Sum over rows of -log softmax(z^L)_y, accumulated in f64.
    pub loss_sum: f64,
    pub correct: usize,
}

/// Every buffer one forward/backward pass needs, allocated once for `rows` samples: the training loop
/// allocates nothing. A shorter batch uses the first rows.
pub struct Workspace<F> {
    rows: usize,
    /// a^l for l = 0..L: [rows, n_l]; a^0 is the input batch, a^L the softmax output.
    acts: Vec<Array2<F>>,
    /// delta^l for l = 1..L (index l - 1): [rows, n_l]. Empty for an evaluation-only workspace.
    deltas: Vec<Array2<F>>,
    /// Column sums of delta^l: [n_l] (index l - 1).
    bias_sums: Vec<Array1<F>>,
    /// A rule's state for b^l (index l - 1), one array per slot; the products hold W^l's.
    bias_state: Vec<Vec<Array1<F>>>,
    /// Labels of the rows currently loaded: [rows].
    labels: Vec<u8>,
    /// The 256 values p / 255 in F: a^0 = x is read from u8 pixels through this table.
    scale: [F; 256],
    /// The matrix products, of [`Kernel::Gemm`] unless [`Workspace::with_kernel`] says otherwise. With
    /// the chain kernels they hold each W^l in panels from [`Workspace::forward`] on; the SGD steps update
    /// those, and the model's W^l follow at the end of a run of steps ([`Workspace::step`] without a
    /// staged batch, or [`Workspace::sync_model`]).
    products: Box<dyn Products<F>>,
    /// The next batch's a^0 and labels, staged by [`Workspace::stage`] for [`Workspace::step`]: [rows,
    /// n_0] (empty for an evaluation-only workspace).
    next_input: Array2<F>,
    next_labels: Vec<u8>,
    staged: bool,
    /// Whether [`Workspace::step`] fuses the update of W^1 with the next batch's Z^1 (chain and lanes
    /// kernels).
    fuse: bool,
    /// Whether the last [`Workspace::step`] did (what a test checks the fused path by).
    fused_last: bool,
    /// Dropout while training (`model.dropout`), when any rate is above 0.
    dropout: Option<DropoutState<F>>,
    /// The elementary functions of the activations, softmax and loss ([`Math::Owned`] unless
    /// [`Workspace::with_math`] says otherwise).
    math: Math,
    /// When set ([`predict`]), each forward pass appends its rows' predictions here.
    predictions: Option<Vec<Prediction>>,
}

/// What the model says of one sample: the class of the largest output (the first of equal ones, as
/// accuracy counts it) and its softmax probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub class: u8,
    pub confidence: f64,
}

/// Inverted dropout of the hidden activations in training forward passes: a^l <- a^l * mask / (1 - p),
/// each unit kept with probability 1 - p, the masks drawn from the stream of (seed, step, layer)
/// ([`StreamRng::dropout`]); the backward pass multiplies delta^l by the same mask.
struct DropoutState<F> {
    /// The rate of each hidden layer (index l - 1 for a^l).
    rates: Vec<f64>,
    seed: u64,
    /// The 0-based global step of the batch the next training forward pass is for.
    step: u64,
    /// Per hidden layer: the mask of the last forward pass, 0 or 1 / (1 - p) per unit ([rows, n_l]).
    masks: Vec<Array2<F>>,
    /// Per hidden layer: a^l before the mask, what act'(z^l) is computed from.
    kept: Vec<Array2<F>>,
    /// Whether the loaded rows went through a dropout forward pass (the step may use the masks).
    applied: bool,
    /// The random words of one layer's mask.
    bits: Vec<u32>,
}

impl<F: Real> Workspace<F> {
    /// A workspace for forward and backward passes on up to `rows` samples.
    pub fn new(sizes: &[usize], rows: usize) -> Self {
        let mut ws = Self::for_eval(sizes, rows);
        ws.deltas = sizes[1..].iter().map(|&n| aligned_zeros(rows, n)).collect();
        ws.bias_sums = sizes[1..].iter().map(|&n| Array1::zeros(n)).collect();
        ws.bias_state = vec![Vec::new(); sizes.len() - 1];
        ws.next_input = aligned_zeros(rows, sizes[0]);
        ws.next_labels = Vec::with_capacity(rows);
        ws
    }

    /// A workspace for forward passes only (evaluation): no gradient buffers.
    pub fn for_eval(sizes: &[usize], rows: usize) -> Self {
        Workspace {
            rows,
            acts: sizes.iter().map(|&n| aligned_zeros(rows, n)).collect(),
            deltas: Vec::new(),
            bias_sums: Vec::new(),
            bias_state: Vec::new(),
            labels: Vec::with_capacity(rows),
            scale: std::array::from_fn(|p| F::from_f64(p as f64 / 255.0)),
            products: F::products(Kernel::Gemm, sizes, false),
            next_input: Array2::zeros((0, 0)),
            next_labels: Vec::new(),
            staged: false,
            fuse: true,
            fused_last: false,
            dropout: None,
            math: Math::Owned,
            predictions: None,
        }
    }

    /// Compute exp, ln and tanh with `math` (a stored run's, to keep its bits).
    pub fn with_math(mut self, math: Math) -> Self {
        self.math = math;
        self
    }

    /// Apply dropout with `rates` (one per hidden layer) in the training forward passes of this
    /// workspace, the masks of step t drawn from `seed`'s dropout streams; set the step of the next batch
    /// with [`Workspace::set_step`]. No-op when every rate is 0.
    pub fn with_dropout(mut self, rates: &[f64], seed: u64) -> Self {
        if rates.iter().all(|&p| p == 0.0) {
            return self;
        }
        let hidden: Vec<usize> = self.acts[1..self.acts.len() - 1]
            .iter()
            .map(|a| a.ncols())
            .collect();
        self.dropout = Some(DropoutState {
            rates: rates.to_vec(),
            seed,
            step: 0,
            masks: hidden
                .iter()
                .map(|&n| aligned_zeros(self.rows, n))
                .collect(),
            kept: hidden
                .iter()
                .map(|&n| aligned_zeros(self.rows, n))
                .collect(),
            applied: false,
            bits: vec![0; self.rows * hidden.iter().max().copied().unwrap_or(0)],
        });
        self
    }

    /// The 0-based global step of the batch the next training forward pass is for (dropout's masks).
    pub fn set_step(&mut self, step: u64) {
        if let Some(d) = &mut self.dropout {
            d.step = step;
        }
    }

    /// Use `kernel` for the matrix products.
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        let sizes: Vec<usize> = self.acts.iter().map(|a| a.ncols()).collect();
        self.products = F::products(kernel, &sizes, !self.deltas.is_empty());
        self
    }

    /// Give the model's W^l to the products (the chain kernels copy them into panels).
    fn pack(&mut self, model: &Mlp<F>) {
        let w: Vec<ArrayView2<'_, F>> = model.layers.iter().map(|l| l.w.view()).collect();
        self.products.load(&w);
    }

    /// Bring the model's W^l up to date with the SGD steps the products took on their own copy (the
    /// chain kernels' panels; a no-op otherwise or when it already is).
    pub fn sync_model(&mut self, model: &mut Mlp<F>) {
        let mut w: Vec<ArrayViewMut2<'_, F>> =
            model.layers.iter_mut().map(|l| l.w.view_mut()).collect();
        self.products.store(&mut w);
    }

    /// Whether [`Workspace::step`] may fuse the update of W^1 with the next batch's first product
    /// (the default; the bits are the same either way, which a test checks, and the bench times both).
    pub fn with_fusion(mut self, fuse: bool) -> Self {
        self.fuse = fuse;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// a^L after [`Workspace::forward`]: the softmax probabilities of the loaded rows, [n, classes].
    pub fn output(&self) -> ndarray::ArrayView2<'_, F> {
        let n = self.labels.len();
        let last = self.acts.len() - 1;
        self.acts[last].slice(s![..n, ..])
    }

    /// Load samples `indices` of `split` as a^0 = pixels / 255, one per row.
    pub fn gather(&mut self, split: SplitRef<'_>, indices: impl ExactSizeIterator<Item = usize>) {
        debug_assert!(indices.len() <= self.rows);
        fill(
            &self.scale,
            &mut self.acts[0],
            &mut self.labels,
            split,
            indices,
        );
    }

    /// Load samples `indices` of `split` as the *next* batch, for [`Workspace::step`] to run its
    /// forward pass right after the current batch's update (training workspaces only).
    ///
    /// With threads (`--threads`), the rows are filled in parallel (each row by one thread: the same
    /// values): at batch 128 this table lookup per pixel is a few percent of a step that would otherwise
    /// run on one thread while the others wait.
    pub fn stage(&mut self, split: SplitRef<'_>, indices: &[usize]) {
        debug_assert!(indices.len() <= self.next_input.nrows());
        self.next_labels.clear();
        self.next_labels
            .extend(indices.iter().map(|&i| split.labels[i]));
        let pixels = split.pixels;
        let rows = indices.len();
        let parts = pool::parts(rows * pixels * STAGE_WORK_PER_PIXEL, rows);
        let dst = SharedRows(
            self.next_input
                .as_slice_mut()
                .expect(CONTIGUOUS)
                .as_mut_ptr(),
        );
        let scale = &self.scale;
        let chunk = rows.div_ceil(parts.max(1) * 4).max(1);
        pool::run_blocks(parts, rows.div_ceil(chunk), &|b| {
            for (row, &i) in indices.iter().enumerate().skip(b * chunk).take(chunk) {
                // SAFETY: row < rows <= the buffer's rows; each row is written by one block only.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(row * pixels), pixels) };
                for (o, &p) in out.iter_mut().zip(split.image(i)) {
                    *o = scale[p as usize];
                }
            }
        });
        self.staged = true;
    }

    /// Load input rows directly (tests and tools): `x` is [n, n_0] already scaled.
    pub fn load(&mut self, x: ArrayView2<'_, F>, labels: &[u8]) {
        let n = labels.len();
        self.acts[0].slice_mut(s![..n, ..]).assign(&x);
        self.labels.clear();
        self.labels.extend_from_slice(labels);
    }

    /// Forward pass over the loaded rows: Z^l = A^(l-1) (W^l)^T + b^l, A^l = act(Z^l), A^L = softmax(Z^L).
    /// Returns the rows' cross-entropy loss (computed stably, as log-softmax) and correct predictions.
    pub fn forward(&mut self, model: &Mlp<F>) -> BatchStats {
        self.pack(model);
        self.forward_from(model, false)
    }

    /// [`Workspace::forward`], with Z^1 = A^0 (W^1)^T already in place when `z1_done`.
    fn forward_from(&mut self, model: &Mlp<F>, z1_done: bool) -> BatchStats {
        let n = self.labels.len();
        let last = model.layers.len();
        for (l, layer) in model.layers.iter().enumerate() {
            let (prev, next) = self.acts.split_at_mut(l + 1);
            let a_prev = prev[l].slice(s![..n, ..]);
            let mut z = next[0].slice_mut(s![..n, ..]);
            if !(l == 0 && z1_done) {
                self.products
                    .forward(l, a_prev, layer.w.view(), z.view_mut());
            }
            if l + 1 < last {
                bias_activate(
                    z.as_slice_mut().expect(CONTIGUOUS),
                    layer.b.as_slice().expect(CONTIGUOUS),
                    model.activation,
                    self.math,
                );
                if let Some(d) = &mut self.dropout {
                    d.apply(l, z.as_slice_mut().expect(CONTIGUOUS), n);
                }
            } else {
                // The next training forward pass is the next step's.
                if let Some(d) = &mut self.dropout {
                    d.applied = true;
                    d.step += 1;
                }
                return softmax_rows(
                    z.as_slice_mut().expect(CONTIGUOUS),
                    layer.b.as_slice().expect(CONTIGUOUS),
                    &self.labels,
                    self.math,
                    self.predictions.as_mut(),
                );
            }
        }
        BatchStats::default()
    }

    /// Backward pass after [`Workspace::forward`] on the same rows, then the update. For l = L .. 1:
    /// Delta^L = A^L - Y; Delta^(l-1) = (Delta^l W^l) * act'(Z^(l-1)) computed before W^l changes;
    /// then W^l and b^l take the summed gradients (Delta^l)^T A^(l-1) and colsum(Delta^l) as `update` says.
    pub fn backward(&mut self, model: &mut Mlp<F>, update: Update<'_, F>) {
        self.backward_fused(model, update, false);
        self.sync_model(model);
    }

    /// The optimizer's state (what [`Workspace::step`] keeps between steps with a rule that has any), as
    /// tensors named `weight.<slot>` and `bias.<slot>` per layer, W^l's row-major: layer 1's slots of W,
    /// then of b, then layer 2's ... `None` when no state is held (plain SGD, or before the first step).
    pub fn optimizer_state(&self) -> Option<Snapshot> {
        let mut tensors = Vec::new();
        for (l, b_slots) in self.bias_state.iter().enumerate() {
            let w_slots = self.products.state(l);
            for (name, w) in state_names(w_slots.len()).iter().zip(&w_slots) {
                let mut data = Vec::new();
                F::extend_le(w.as_slice().expect(CONTIGUOUS), &mut data);
                tensors.push(Tensor {
                    layer: l + 1,
                    param: name.0,
                    shape: w.shape().to_vec(),
                    data,
                });
            }
            for (name, b) in state_names(b_slots.len()).iter().zip(b_slots) {
                let mut data = Vec::new();
                F::extend_le(b.as_slice().expect(CONTIGUOUS), &mut data);
                tensors.push(Tensor {
                    layer: l + 1,
                    param: name.1,
                    shape: vec![b.len()],
                    data,
                });
            }
        }
        (!tensors.is_empty()).then_some(Snapshot {
            dtype: F::DTYPE,
            tensors,
        })
    }

    /// Take a checkpoint's optimizer state (written by [`Workspace::optimizer_state`]) as the state of
    /// the next steps. An error says what does not fit (the caller reports the stored state as corrupt).
    pub fn set_optimizer_state(&mut self, state: &Snapshot) -> Result<(), String> {
        if state.dtype != F::DTYPE {
            return Err(format!(
                "its optimizer state is {}, the run is {}",
                state.dtype.as_str(),
                F::DTYPE.as_str()
            ));
        }
        let sizes: Vec<usize> = self.acts.iter().map(|a| a.ncols()).collect();
        for l in 0..self.bias_state.len() {
            let (rows, cols) = (sizes[l + 1], sizes[l]);
            let count = |param: &str| {
                state
                    .tensors
                    .iter()
                    .filter(|t| t.layer == l + 1 && t.param.starts_with(param))
                    .count()
            };
            let (slots, bias_slots) = (count("weight."), count("bias."));
            if bias_slots != slots || slots > 2 {
                return Err(format!(
                    "layer {} has {slots} weight slots and {bias_slots} bias slots",
                    l + 1
                ));
            }
            let names = state_names(slots);
            let mut w_slots = Vec::new();
            let mut b_slots = Vec::new();
            for (wn, bn) in names {
                let find = |name: &str, shape: &[usize]| {
                    state
                        .tensors
                        .iter()
                        .find(|t| t.layer == l + 1 && t.param == name && t.shape == shape)
                        .map(|t| F::from_le(&t.data))
                        .filter(|v| v.len() == shape.iter().product::<usize>())
                        .ok_or_else(|| format!("layer {} has no {name} of shape {shape:?}", l + 1))
                };
                let w = find(wn, &[rows, cols])?;
                w_slots.push(Array2::from_shape_vec((rows, cols), w).map_err(|e| e.to_string())?);
                b_slots.push(Array1::from_vec(find(bn, &[rows])?));
            }
            let views: Vec<ArrayView2<'_, F>> = w_slots.iter().map(|w| w.view()).collect();
            self.products.set_state(l, &views);
            self.bias_state[l] = b_slots;
        }
        Ok(())
    }

    /// Rows of the loaded batch (n).
    pub fn batch_len(&self) -> usize {
        self.labels.len()
    }

    /// One optimizer step on the loaded batch, after [`Workspace::forward`]: [`Workspace::backward`]
    /// with `rule` (plain SGD: w -= (lr / n) * sum of gradients). If a next batch was staged
    /// ([`Workspace::stage`]), it is then loaded and its forward pass run, and its stats returned: with this
    /// crate's kernels, a plain step and batches of up to [`FUSE_MAX_ROWS`], the update of W^1 and the next
    /// Z^1 = A^0 (W^1)^T are one pass over W^1 (`core::kernel::update_then_abt`), with the same bits as the
    /// two products one after the other.
    pub fn step(&mut self, model: &mut Mlp<F>, rule: Rule<F>) -> Option<BatchStats> {
        let staged = std::mem::take(&mut self.staged);
        let fuse = staged && self.fuse && self.labels.len() <= FUSE_MAX_ROWS;
        let fused = self.backward_fused(model, Update::Rule(rule), fuse);
        self.fused_last = fused;
        if !staged {
            self.sync_model(model);
            return None;
        }
        std::mem::swap(&mut self.acts[0], &mut self.next_input);
        std::mem::swap(&mut self.labels, &mut self.next_labels);
        Some(self.forward_from(model, fused))
    }

    /// [`Workspace::backward`]; with `fuse_next`, the update of W^1 also computes the staged batch's Z^1
    /// into a^1's buffer (free by then) when the chain or lanes kernels can. Returns whether it did.
    fn backward_fused(
        &mut self,
        model: &mut Mlp<F>,
        update: Update<'_, F>,
        fuse_next: bool,
    ) -> bool {
        let mut fused = false;
        let n = self.labels.len();
        let last = model.layers.len();
        // delta^L = a^L - y
        {
            let out = self.acts[last].slice(s![..n, ..]);
            let mut d = self.deltas[last - 1].slice_mut(s![..n, ..]);
            d.assign(&out);
            for (mut row, &y) in d.axis_iter_mut(Axis(0)).zip(&self.labels) {
                row[y as usize] = row[y as usize] - F::one();
            }
        }
        // A plain step's alpha = -lr / n: W^l <- W^l + alpha S^l in the gradient product itself.
        let update = match update {
            Update::Sgd { learning_rate } => Update::Rule(Rule::Plain {
                alpha: F::from_f64(-learning_rate / n as f64),
            }),
            u => u,
        };
        let (alpha, beta) = match &update {
            Update::Rule(Rule::Plain { alpha }) => (*alpha, F::one()),
            Update::Rule(_) => (F::zero(), F::one()),
            Update::Sgd { .. } | Update::Gradient(_) => (F::one(), F::zero()),
        };
        let mut update = update;
        for l in (0..last).rev() {
            // delta^(l-1) = (delta^l W^l) * act'(z^(l-1)), using W^l before its update.
            if l > 0 {
                let (lower, upper) = self.deltas.split_at_mut(l);
                let d = upper[0].slice(s![..n, ..]);
                let mut d_prev = lower[l - 1].slice_mut(s![..n, ..]);
                self.products
                    .backward(l, d, model.layers[l].w.view(), d_prev.view_mut());
                // act'(z^l) from a^l before its mask, then delta^l times the mask.
                let dropped = self
                    .dropout
                    .as_ref()
                    .filter(|d| d.applied && d.rates[l - 1] > 0.0);
                let a = match dropped {
                    Some(d) => d.kept[l - 1].slice(s![..n, ..]),
                    None => self.acts[l].slice(s![..n, ..]),
                };
                let d_prev = d_prev.as_slice_mut().expect(CONTIGUOUS);
                activation_grad(d_prev, a.as_slice().expect(CONTIGUOUS), model.activation);
                if let Some(d) = dropped {
                    let mask = d.masks[l - 1].slice(s![..n, ..]);
                    for (g, &m) in d_prev.iter_mut().zip(mask.as_slice().expect(CONTIGUOUS)) {
                        *g = *g * m;
                    }
                }
            }
            let d = self.deltas[l].slice(s![..n, ..]);
            let (acts_to_l, acts_above) = self.acts.split_at_mut(l + 1);
            let a_prev = acts_to_l[l].slice(s![..n, ..]);
            let sums = &mut self.bias_sums[l];
            sums.fill(F::zero());
            for row in d.axis_iter(Axis(0)) {
                sums.zip_mut_with(&row, |s, &x| *s = *s + x);
            }
            // W^l <- beta W^l + alpha (delta^l)^T a^(l-1);  b^l <- beta b^l + alpha colsum(delta^l).
            let target = match &mut update {
                Update::Rule(rule @ (Rule::Sgd { .. } | Rule::Adam { .. })) => {
                    // S^l, then the rule on W^l and its state (held by the products), then on b^l;
                    // for W^1 with a staged batch, that batch's Z^1 as with a plain step.
                    let next = (l == 0 && fuse_next).then(|| {
                        let m = self.next_labels.len();
                        (
                            self.next_input.slice(s![..m, ..]),
                            acts_above[0].slice_mut(s![..m, ..]),
                        )
                    });
                    let target = &mut model.layers[l];
                    fused |=
                        self.products
                            .update_rule(l, d, a_prev, target.w.view_mut(), rule, next);
                    let state = &mut self.bias_state[l];
                    while state.len() < rule.slots() {
                        state.push(Array1::zeros(sums.len()));
                    }
                    let mut slots: Vec<&mut [F]> = state
                        .iter_mut()
                        .map(|x| x.as_slice_mut().expect(CONTIGUOUS))
                        .collect();
                    rule::apply(
                        rule,
                        target.b.as_slice_mut().expect(CONTIGUOUS),
                        sums.as_slice().expect(CONTIGUOUS),
                        &mut slots,
                    );
                    continue;
                }
                Update::Sgd { .. } | Update::Rule(_) => {
                    // For W^1 with a staged batch: that batch's Z^1 into a^1's buffer (free by now),
                    // in the same pass over W^1 if the kernel can.
                    let next = (l == 0 && fuse_next).then(|| {
                        let m = self.next_labels.len();
                        (
                            self.next_input.slice(s![..m, ..]),
                            acts_above[0].slice_mut(s![..m, ..]),
                        )
                    });
                    let target = &mut model.layers[l];
                    fused |= self
                        .products
                        .update(l, d, a_prev, target.w.view_mut(), alpha, next);
                    target
                }
                Update::Gradient(g) => {
                    let target = &mut g.layers[l];
                    self.products.gradient(d, a_prev, target.w.view_mut());
                    target
                }
            };
            target
                .b
                .zip_mut_with(sums, |b, &s| *b = beta * *b + alpha * s);
        }
        fused
    }
}

/// The tensor names of `slots` state slots: (W's, b's) for each, velocity for one, m and v for two.
fn state_names(slots: usize) -> &'static [(&'static str, &'static str)] {
    match slots {
        0 => &[],
        1 => &[("weight.velocity", "bias.velocity")],
        _ => &[("weight.m", "bias.m"), ("weight.v", "bias.v")],
    }
}

impl<F: Real> DropoutState<F> {
    /// a^(l+1) (hidden layer `l`, 0-based) of `rows` rows: keep a^l in `kept`, draw the mask of this
    /// step and layer (a unit is kept when its 32 random bits are at least p * 2^32), a^l <- a^l * mask.
    fn apply(&mut self, l: usize, a: &mut [F], rows: usize) {
        let p = self.rates[l];
        if p == 0.0 || rows == 0 {
            return;
        }
        let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        let scale = F::from_f64(1.0 / (1.0 - p));
        let bits = &mut self.bits[..a.len()];
        dropout_bits(self.seed, self.step, (l + 1) as u32, bits);
        let mask = &mut self.masks[l].as_slice_mut().expect(CONTIGUOUS)[..a.len()];
        self.kept[l].as_slice_mut().expect(CONTIGUOUS)[..a.len()].copy_from_slice(a);
        for ((x, m), &r) in a.iter_mut().zip(mask.iter_mut()).zip(bits.iter()) {
            *m = if r >= threshold { scale } else { F::zero() };
            *x = *x * *m;
        }
    }
}

/// Load samples `indices` of `split` into `input` as x / 255 (one per row, through `scale`) and `labels`.
fn fill<F: Real>(
    scale: &[F; 256],
    input: &mut Array2<F>,
    labels: &mut Vec<u8>,
    split: SplitRef<'_>,
    indices: impl ExactSizeIterator<Item = usize>,
) {
    labels.clear();
    let dst = input.as_slice_mut().expect(CONTIGUOUS);
    for (row, i) in indices.enumerate() {
        let out = &mut dst[row * split.pixels..(row + 1) * split.pixels];
        for (o, &p) in out.iter_mut().zip(split.image(i)) {
            *o = scale[p as usize];
        }
        labels.push(split.labels[i]);
    }
}

/// z <- act(z + b) for each row of a row-major [rows, b.len()] buffer.
fn bias_activate<F: Real>(z: &mut [F], b: &[F], act: Activation, math: Math) {
    for row in z.chunks_exact_mut(b.len()) {
        for (v, &bias) in row.iter_mut().zip(b) {
            let x = *v + bias;
            *v = match act {
                // `x < 0` is false for NaN, so a NaN propagates to the loss and the run is marked diverged.
                Activation::Relu => {
                    if x < F::zero() {
                        F::zero()
                    } else {
                        x
                    }
                }
                Activation::Sigmoid => F::one() / (F::one() + (-x).exp_in(math)),
                Activation::Tanh => x.tanh_in(math),
            };
        }
    }
}

/// d <- d * act'(z), with act' written in terms of a = act(z): relu' = [a > 0], sigmoid' = a (1 - a),
/// tanh' = 1 - a^2. Storing only a saves keeping z.
fn activation_grad<F: Real>(d: &mut [F], a: &[F], act: Activation) {
    for (g, &a) in d.iter_mut().zip(a) {
        *g = match act {
            Activation::Relu => {
                if a > F::zero() {
                    *g
                } else {
                    F::zero()
                }
            }
            Activation::Sigmoid => *g * a * (F::one() - a),
            Activation::Tanh => *g * (F::one() - a * a),
        };
    }
}

/// For each row: z <- z + b, then the loss -log softmax(z)_y = -(z_y - m - ln sum exp(z - m)) with
/// m = max z (never log 0), the argmax for accuracy, and finally z <- softmax(z) in place. With
/// `predictions`, each row's argmax and its probability are appended to it.
fn softmax_rows<F: Real>(
    z: &mut [F],
    b: &[F],
    labels: &[u8],
    math: Math,
    mut predictions: Option<&mut Vec<Prediction>>,
) -> BatchStats {
    let mut stats = BatchStats::default();
    for (row, &y) in z.chunks_exact_mut(b.len()).zip(labels) {
        let mut max = F::neg_infinity();
        let mut arg = 0;
        for (j, (v, &bias)) in row.iter_mut().zip(b).enumerate() {
            *v = *v + bias;
            if *v > max {
                max = *v;
                arg = j;
            }
        }
        // log a_y = (z_y - m) - ln(sum_j exp(z_j - m)): finite for any finite z, unlike log(softmax(z)_y).
        let shifted_y = (row[y as usize] - max).to_f64();
        let mut sum = F::zero();
        for v in row.iter_mut() {
            let e = (*v - max).exp_in(math);
            sum = sum + e;
            *v = e;
        }
        let log_p = shifted_y - math.ln(sum.to_f64());
        stats.loss_sum -= log_p;
        stats.correct += usize::from(arg == y as usize && max.is_finite());
        let inv = F::one() / sum;
        row.iter_mut().for_each(|v| *v = *v * inv);
        if let Some(p) = predictions.as_deref_mut() {
            p.push(Prediction {
                class: u8::try_from(arg).unwrap_or(u8::MAX),
                confidence: row[arg].to_f64(),
            });
        }
    }
    stats
}

/// Multiply-adds a pixel's lookup is counted as when [`pool::parts`] decides whether staging a batch is
/// worth a second thread: a lookup and a store take about as long as 100 vectorized multiply-adds (a
/// batch of 128 rows, some 40 microseconds, is split; one of 10 rows is not).
const STAGE_WORK_PER_PIXEL: usize = 100;

/// The next batch's buffer, shared by the threads that fill disjoint rows of it.
struct SharedRows<F>(*mut F);
// SAFETY: only used for writes to disjoint rows, joined before the buffer's borrow ends.
unsafe impl<F> Sync for SharedRows<F> {}

impl<F> SharedRows<F> {
    /// The pointer `offset` elements on.
    ///
    /// # Safety
    /// The offset must stay inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut F {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// Why the slices above exist: every workspace buffer and parameter array is allocated here (or in
/// `Mlp`) in standard row-major layout, and row ranges of them stay contiguous. A failure is a bug.
const CONTIGUOUS: &str = "workspace and parameter arrays are contiguous and row-major";

/// The largest batch whose steps [`Workspace::step`] fuses. A pass over W^1 costs the same at any
/// batch size while the products grow with it: the fusion saves a pass over W^1 a step, which matters
/// when W^1 does not fit a core's L2 and the batch is small, and not at large batches (`runner bench`,
/// its `fusion_gain` column, measures it). The bits are the same either way.
pub const FUSE_MAX_ROWS: usize = 64;

/// Rows per block when evaluating a whole split.
pub const EVAL_BLOCK: usize = 1000;

/// Mean loss and accuracy of `model` over `split`, forward passes only, in blocks of the workspace's rows.
///
/// With threads (`--threads`), whole blocks go to the threads (each takes the next block not yet
/// taken, with its own workspace and its products on its own thread), so that gathering, activations and
/// softmax run in parallel too, not only the products; the blocks' sums are added in block order, so the
/// result has the bits of one thread.
pub fn evaluate<F: Real>(model: &Mlp<F>, split: SplitRef<'_>, ws: &mut Workspace<F>) -> (f64, f64) {
    let (loss, acc, _) = evaluate_with(model, split, ws, false);
    (loss, acc)
}

/// Samples and correct predictions of each class (indexed by the label), over a split.
pub type ClassCounts = Vec<[u64; 2]>;

/// [`evaluate`], with the samples and correct predictions of each class (the same predictions that
/// accuracy counts; the bits of the loss and accuracy are those of [`evaluate`]).
pub fn evaluate_classes<F: Real>(
    model: &Mlp<F>,
    split: SplitRef<'_>,
    ws: &mut Workspace<F>,
) -> (f64, f64, ClassCounts) {
    let (loss, acc, classes) = evaluate_with(model, split, ws, true);
    (loss, acc, classes.unwrap_or_default())
}

fn evaluate_with<F: Real>(
    model: &Mlp<F>,
    split: SplitRef<'_>,
    ws: &mut Workspace<F>,
    by_class: bool,
) -> (f64, f64, Option<ClassCounts>) {
    let classes = model.sizes().last().copied().unwrap_or(0);
    let rows = ws.rows().max(1);
    let blocks = split.len().div_ceil(rows);
    // matrixmultiply's GEMM splits its own products over the threads: only this crate's kernels run a
    // block on one thread.
    let parts = if ws.products.blocks_on_threads() {
        pool::available(blocks)
    } else {
        1
    };
    // The chain kernels' panels are packed once for all blocks (and copied to the helpers).
    ws.pack(model);
    let block_stats = |ws: &mut Workspace<F>, b: usize| {
        let (start, end) = (b * rows, ((b + 1) * rows).min(split.len()));
        ws.gather(split, start..end);
        if by_class {
            ws.predictions = Some(Vec::with_capacity(end - start));
        }
        let stats = ws.forward_from(model, false);
        let counts = ws.predictions.take().map(|p| {
            let mut c: ClassCounts = vec![[0, 0]; classes];
            for (&y, p) in split.labels[start..end].iter().zip(&p) {
                if let Some(k) = c.get_mut(y as usize) {
                    k[0] += 1;
                    // As accuracy counts: a row of NaN outputs is never right.
                    k[1] += u64::from(p.class == y && p.confidence.is_finite());
                }
            }
            c
        });
        (stats, counts)
    };
    let stats: Vec<(BatchStats, Option<ClassCounts>)> = if parts <= 1 {
        (0..blocks).map(|b| block_stats(ws, b)).collect()
    } else {
        let sizes: Vec<usize> = ws.acts.iter().map(|a| a.ncols()).collect();
        let products = ws.products.boxed_clone();
        let math = ws.math;
        let mine = Mutex::new(Some(ws));
        let slots: Vec<Mutex<(BatchStats, Option<ClassCounts>)>> =
            (0..blocks).map(|_| Mutex::default()).collect();
        // Each thread takes the next block no thread has taken (a thread slowed by another process takes
        // fewer); the sums are added in block order below, whoever computed them.
        let next = std::sync::atomic::AtomicUsize::new(0);
        pool::run(parts, &|p| {
            let claim = || {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (b < blocks).then_some(b)
            };
            let Some(first) = claim() else {
                // Every block was taken before this part started (a part taken back runs here late).
                return;
            };
            let taken = if p == 0 {
                mine.lock().ok().and_then(|mut m| m.take())
            } else {
                None
            };
            let mut own;
            let ws = match taken {
                Some(ws) => ws,
                None => {
                    own = Workspace::for_eval(&sizes, rows).with_math(math);
                    own.products = products.boxed_clone();
                    &mut own
                }
            };
            let mut b = Some(first);
            while let Some(block) = b {
                let s = block_stats(ws, block);
                if let Ok(mut slot) = slots[block].lock() {
                    *slot = s;
                }
                b = claim();
            }
        });
        slots
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect()
    };
    let mut total = BatchStats::default();
    let mut counts: Option<ClassCounts> = by_class.then(|| vec![[0, 0]; classes]);
    for (s, c) in stats {
        total.loss_sum += s.loss_sum;
        total.correct += s.correct;
        if let (Some(all), Some(c)) = (counts.as_mut(), c) {
            for (a, b) in all.iter_mut().zip(&c) {
                a[0] += b[0];
                a[1] += b[1];
            }
        }
    }
    let n = split.len().max(1) as f64;
    (total.loss_sum / n, total.correct as f64 / n, counts)
}

/// The prediction of `model` for every sample of `split`, in order, with forward passes of the
/// workspace's rows (one thread): the class each output's argmax names, as [`evaluate`] counts accuracy.
pub fn predict<F: Real>(
    model: &Mlp<F>,
    split: SplitRef<'_>,
    ws: &mut Workspace<F>,
) -> Vec<Prediction> {
    let rows = ws.rows().max(1);
    ws.pack(model);
    ws.predictions = Some(Vec::with_capacity(split.len()));
    for start in (0..split.len()).step_by(rows) {
        ws.gather(split, start..(start + rows).min(split.len()));
        ws.forward_from(model, false);
    }
    ws.predictions.take().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Init;
    use crate::core::reference;
    use crate::core::rng::{Stream, StreamRng};

    #[test]
    fn softmax_cross_entropy_matches_hand_values() {
        // z = [1, 2, 3] (bias 0), y = 2: softmax = e^z / sum, loss = -ln(e^3 / (e + e^2 + e^3)).
        let mut z = [1.0f64, 2.0, 3.0];
        let s = softmax_rows(&mut z, &[0.0; 3], &[2], Math::Owned, None);
        let denom = 1f64.exp() + 2f64.exp() + 3f64.exp();
        assert!((s.loss_sum - -(3f64.exp() / denom).ln()).abs() < 1e-12);
        assert_eq!(s.correct, 1);
        assert!((z.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((z[0] - 1f64.exp() / denom).abs() < 1e-12);
    }

    #[test]
    fn loss_is_finite_where_naive_log_softmax_is_not() {
        // The tutorial's log(softmax) gives log(0) = -inf for a far-off class; log-softmax stays finite.
        let mut z = [0.0f32, 1000.0];
        let s = softmax_rows(&mut z, &[0.0; 2], &[0], Math::Owned, None);
        assert!(s.loss_sum.is_finite(), "{}", s.loss_sum);
        assert!((s.loss_sum - 1000.0).abs() < 1e-3);
        assert_eq!(s.correct, 0);
    }

    #[test]
    fn nan_logits_give_nan_loss() {
        let mut z = [f32::NAN, 1.0];
        assert!(
            softmax_rows(&mut z, &[0.0; 2], &[1], Math::Owned, None)
                .loss_sum
                .is_nan()
        );
    }

    #[test]
    fn init_scales_follow_the_scheme() {
        let sizes = [784, 256, 10];
        let mut rng = StreamRng::new(1, Stream::Init);
        let m: Mlp<f64> = Mlp::init(&sizes, Activation::Relu, Init::He, &mut rng);
        let w = &m.layers[0].w;
        let var = w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64;
        assert!((var / (2.0 / 784.0) - 1.0).abs() < 0.05, "{var}");
        assert!(m.layers[0].b.iter().all(|&b| b == 0.0));
        let n: Mlp<f64> = Mlp::init(&sizes, Activation::Relu, Init::Normal, &mut rng);
        assert!(n.layers[1].b.iter().any(|&b| b != 0.0));
        assert_eq!(m.sizes(), sizes.to_vec());
    }

    #[test]
    fn snapshot_round_trips() {
        let mut rng = StreamRng::new(2, Stream::Init);
        let m: Mlp<f32> = Mlp::init(&[6, 5, 3], Activation::Tanh, Init::Normal, &mut rng);
        let s = m.snapshot();
        assert_eq!(s.tensors[0].shape, vec![5, 6]);
        assert_eq!(s.tensors[0].data.len(), 5 * 6 * 4);
        let back = Mlp::<f32>::from_snapshot(&s, Activation::Tanh).unwrap();
        assert_eq!(back, m);
        assert!(Mlp::<f64>::from_snapshot(&s, Activation::Tanh).is_none());
    }

    fn random_batch(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f64>, Vec<u8>) {
        let mut r = StreamRng::new(seed, Stream::Shuffle);
        let x = Array2::from_shape_simple_fn((n, d), || r.uniform());
        let y = (0..n).map(|_| r.below(classes as u64) as u8).collect();
        (x, y)
    }

    fn batched_gradients(m: &mut Mlp<f64>, x: &Array2<f64>, y: &[u8]) -> Mlp<f64> {
        let mut ws = Workspace::new(&m.sizes(), x.nrows() + 3);
        ws.load(x.view(), y);
        ws.forward(m);
        let mut g = m.zeros_like();
        ws.backward(m, Update::Gradient(&mut g));
        g
    }

    #[test]
    fn batched_gradients_equal_the_per_sample_sum() {
        for act in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            let mut rng = StreamRng::new(3, Stream::Init);
            let mut m: Mlp<f64> = Mlp::init(&[12, 9, 7, 4], act, Init::Xavier, &mut rng);
            let (x, y) = random_batch(11, 12, 4, 9);
            let reference = reference::per_sample_gradients(&m, &x, &y);
            let before = m.clone();
            let g = batched_gradients(&mut m, &x, &y);
            assert_eq!(m, before, "gradient mode must not change the model");
            for (a, b) in g.layers.iter().zip(&reference.layers) {
                let err = (&a.w - &b.w).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                let errb = (&a.b - &b.b).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                assert!(err < 1e-12 && errb < 1e-12, "{act:?}: {err} {errb}");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = StreamRng::new(4, Stream::Init);
        let mut m: Mlp<f64> = Mlp::init(&[5, 6, 3], Activation::Tanh, Init::Normal, &mut rng);
        let (x, y) = random_batch(4, 5, 3, 5);
        let g = batched_gradients(&mut m, &x, &y);
        let loss = |m: &Mlp<f64>| {
            let mut ws = Workspace::for_eval(&m.sizes(), 4);
            ws.load(x.view(), &y);
            ws.forward(m).loss_sum
        };
        let h = 1e-6;
        for l in 0..2 {
            for idx in [(0, 0), (1, 2), (2, 1)] {
                let mut plus = m.clone();
                plus.layers[l].w[idx] += h;
                let mut minus = m.clone();
                minus.layers[l].w[idx] -= h;
                let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
                let analytic = g.layers[l].w[idx];
                assert!(
                    (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                    "W{l}{idx:?}: {numeric} vs {analytic}"
                );
            }
            let mut plus = m.clone();
            plus.layers[l].b[1] += h;
            let mut minus = m.clone();
            minus.layers[l].b[1] -= h;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
            assert!(
                (numeric - g.layers[l].b[1]).abs() < 1e-6,
                "b{l}: {numeric} vs {}",
                g.layers[l].b[1]
            );
        }
    }

    /// The staged step takes the fused path with the lanes kernels (and only up to FUSE_MAX_ROWS), and
    /// lands on the bits of a step followed by a separate forward pass.
    #[test]
    fn staged_steps_fuse_and_keep_the_bits() {
        for (rows, fuses, kernel) in [
            (10, true, Kernel::Lanes),
            (FUSE_MAX_ROWS + 1, false, Kernel::Lanes),
            (10, true, Kernel::Chain),
            (FUSE_MAX_ROWS + 1, false, Kernel::Chain),
            (37, true, Kernel::Chain),
        ] {
            let mut rng = StreamRng::new(6, Stream::Init);
            let model: Mlp<f32> = Mlp::init(&[40, 33, 5], Activation::Relu, Init::He, &mut rng);
            let (x, y) = random_batch(rows, 40, 5, 7);
            let (x2, y2) = random_batch(rows - 3, 40, 5, 8);
            let (x, x2) = (x.mapv(|v| v as f32), x2.mapv(|v| v as f32));
            let ws = || Workspace::new(&model.sizes(), rows).with_kernel(kernel);
            // one step, then the next batch's forward pass on its own
            let (mut m1, mut w1) = (model.clone(), ws());
            w1.load(x.view(), &y);
            w1.forward(&m1);
            w1.backward(&mut m1, Update::Sgd { learning_rate: 0.3 });
            w1.load(x2.view(), &y2);
            let want = w1.forward(&m1);
            // the same, the next batch staged
            let (mut m2, mut w2) = (model.clone(), ws());
            w2.load(x.view(), &y);
            w2.forward(&m2);
            w2.next_input.slice_mut(s![..rows - 3, ..]).assign(&x2);
            w2.next_labels = y2.clone();
            w2.staged = true;
            let got = w2
                .step(
                    &mut m2,
                    Rule::Plain {
                        alpha: (-0.3 / rows as f64) as f32,
                    },
                )
                .expect("a staged batch gives stats");
            assert_eq!(w2.fused_last, fuses, "rows {rows}");
            // With the chain kernels the model's W catch up with the panels when asked (or at the
            // end of an epoch's steps); before that they are behind.
            assert_eq!(m1 == m2, kernel != Kernel::Chain, "rows {rows}");
            w2.sync_model(&mut m2);
            assert_eq!(m1, m2, "rows {rows} {kernel:?}");
            assert_eq!(
                want.loss_sum.to_bits(),
                got.loss_sum.to_bits(),
                "rows {rows}"
            );
            assert_eq!(w1.output(), w2.output(), "rows {rows}");
        }
    }

    /// With dropout, the gradients are those of the network with this step's masks: finite differences
    /// of the loss of forward passes with the same step's masks agree; about p of the units are dropped,
    /// and the masks differ from step to step but not between two passes of one step.
    #[test]
    fn dropout_gradients_match_finite_differences_of_the_masked_network() {
        let mut rng = StreamRng::new(8, Stream::Init);
        let mut m: Mlp<f64> = Mlp::init(&[5, 40, 30, 3], Activation::Tanh, Init::Xavier, &mut rng);
        let (x, y) = random_batch(6, 5, 3, 9);
        let mut ws = Workspace::new(&m.sizes(), 6).with_dropout(&[0.3, 0.5], 77);
        let loss = |ws: &mut Workspace<f64>, m: &Mlp<f64>| {
            ws.set_step(41);
            ws.load(x.view(), &y);
            ws.forward(m).loss_sum
        };
        let at_41 = loss(&mut ws, &m);
        assert_eq!(loss(&mut ws, &m).to_bits(), at_41.to_bits());
        let mask = ws.dropout.as_ref().unwrap().masks[1].clone();
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.5).abs() < 0.15, "{dropped}");
        assert!(mask.iter().all(|&v| v == 0.0 || v == 2.0));
        ws.set_step(42);
        ws.load(x.view(), &y);
        ws.forward(&m);
        assert_ne!(ws.dropout.as_ref().unwrap().masks[1], mask);
        // The gradient at step 41.
        loss(&mut ws, &m);
        let mut g = m.zeros_like();
        ws.backward(&mut m, Update::Gradient(&mut g));
        let h = 1e-6;
        for l in 0..3 {
            for idx in [(0, 0), (1, 2), (2, 1)] {
                let mut plus = m.clone();
                plus.layers[l].w[idx] += h;
                let mut minus = m.clone();
                minus.layers[l].w[idx] -= h;
                let numeric = (loss(&mut ws, &plus) - loss(&mut ws, &minus)) / (2.0 * h);
                let analytic = g.layers[l].w[idx];
                assert!(
                    (numeric - analytic).abs() < 1e-6 * (1.0 + analytic.abs()),
                    "W{l}{idx:?}: {numeric} vs {analytic}"
                );
            }
        }
        // Some gradient entries are 0 because their unit was dropped, not all.
        let zeros = g.layers[1].w.iter().filter(|&&v| v == 0.0).count();
        assert!(zeros > 0 && zeros < g.layers[1].w.len(), "{zeros}");
    }

    #[test]
    fn sgd_step_is_w_minus_lr_over_n_times_gradient_sum() {
        let mut rng = StreamRng::new(5, Stream::Init);
        let mut m: Mlp<f64> = Mlp::init(&[8, 6, 4], Activation::Relu, Init::He, &mut rng);
        let (x, y) = random_batch(7, 8, 4, 6);
        let g = batched_gradients(&mut m.clone(), &x, &y);
        let before = m.clone();
        let mut ws = Workspace::new(&m.sizes(), 10);
        ws.load(x.view(), &y);
        ws.forward(&m);
        ws.backward(&mut m, Update::Sgd { learning_rate: 0.5 });
        for l in 0..2 {
            let expect = &before.layers[l].w - &(&g.layers[l].w * (0.5 / 7.0));
            let err = (&m.layers[l].w - &expect)
                .iter()
                .fold(0.0f64, |e, v| e.max(v.abs()));
            assert!(err < 1e-14, "{err}");
            let expect_b = &before.layers[l].b - &(&g.layers[l].b * (0.5 / 7.0));
            assert!((&m.layers[l].b - &expect_b).iter().all(|v| v.abs() < 1e-14));
        }
    }
}
