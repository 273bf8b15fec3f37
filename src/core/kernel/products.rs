//! The matrix products of an SGD step, behind one trait, and the one place a [`Kernel`] becomes code.
//!
//! A batch of n samples, one per row (the workspace's notation): the forward product Z^l = A^(l-1) (W^l)^T,
//! the backward product Delta^(l-1) = Delta^l W^l (with W^l as before this step's update), and the update
//! W^l <- W^l + alpha (Delta^l)^T A^(l-1) (alpha = -lr / n), or the summed gradient (Delta^l)^T A^(l-1)
//! alone. [`Products`] is those four, plus what a kernel keeps between steps (the chain kernels hold each
//! W^l in panels while steps run). [`build`] chooses the implementation once, when a workspace is built:
//! the chain kernels, the lanes kernels, or matrixmultiply's GEMM. A new kernel (a NEON path, another
//! contract) is a new implementation here; the workspace does not change.
//!
//! Every view given to these products is contiguous and row-major (the workspace allocates them so); a
//! view that is not is a bug, and panics.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, LinalgScalar};

use super::Kernel;
use super::chain::{self, Panels};
use super::lanes::{self, Coef, Epilogue, Lane, Mat, MatMut, Vector};
use super::rule::{self, Rule, RuleElem};

const CONTIGUOUS: &str = "the workspace's matrices are contiguous and row-major";

/// The next batch's first product, computed by [`Products::update`] of W^1 as W^1 is updated: that
/// batch's A^0 and the buffer for its Z^1.
pub type Next<'a, T> = (ArrayView2<'a, T>, ArrayViewMut2<'a, T>);

/// The matrix products of forward and backward passes on one network, with one kernel.
///
/// `l` is a layer's index from 0 (W^1 is `l = 0`); `w` is the model's W^l. A kernel that holds W^l in its
/// own layout ([`Products::holds_weights`]) reads and updates that instead, and gives it back to the model
/// in [`Products::store`].
pub trait Products<T>: Send + Sync {
    /// Take the model's weights W^1..W^L, before steps or an evaluation (a no-op unless
    /// [`Products::holds_weights`]).
    ///
    /// # Panics
    /// If steps taken since the last [`Products::store`] would be lost.
    fn load(&mut self, w: &[ArrayView2<'_, T>]);
    /// Write the steps taken since [`Products::load`] into the model's W^1..W^L (a no-op unless
    /// [`Products::holds_weights`], or when there are none).
    fn store(&mut self, w: &mut [ArrayViewMut2<'_, T>]);
    /// Whether this kernel keeps W^l in its own layout between [`Products::load`] and [`Products::store`].
    fn holds_weights(&self) -> bool;
    /// Z^l = A^(l-1) (W^l)^T: `z` [n, n_l] from `a` [n, n_(l-1)].
    fn forward(
        &self,
        l: usize,
        a: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        z: ArrayViewMut2<'_, T>,
    );
    /// `out` = Delta^l W^l [n, n_(l-1)], with W^l as before this step's update.
    fn backward(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    );
    /// `out` = (Delta^l)^T A^(l-1) [n_l, n_(l-1)]: the gradient of W^l summed over the batch.
    fn gradient(&self, delta: ArrayView2<'_, T>, a: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>);
    /// The SGD update W^l <- W^l + alpha (Delta^l)^T A^(l-1); with `next`, also the next batch's
    /// Z^1 = A^0 (W^1)^T with the updated W^1, in the same pass over W^1 if this kernel can. Returns
    /// whether it computed `next` (the caller runs that product itself otherwise).
    fn update(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        w: ArrayViewMut2<'_, T>,
        alpha: T,
        next: Option<Next<'_, T>>,
    ) -> bool;
    /// An update whose rule keeps state ([`Rule::Sgd`], [`Rule::Adam`]; a [`Rule::Plain`] step is
    /// [`Products::update`]): the summed gradient S = (Delta^l)^T A^(l-1), then `rule` on W^l, S and the
    /// state this kernel holds for W^l, in W^l's own layout (zeros until the first such update or
    /// [`Products::set_state`]); with `next`, as in [`Products::update`]. Returns whether it computed
    /// `next`.
    fn update_rule(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        w: ArrayViewMut2<'_, T>,
        rule: &Rule<T>,
        next: Option<Next<'_, T>>,
    ) -> bool;
    /// The rule state of W^l, row-major, one array per slot (none before any).
    fn state(&self, l: usize) -> Vec<Array2<T>>;
    /// Replace the rule state of W^l (a resumed run's), row-major, one array per slot.
    ///
    /// # Panics
    /// If a slot's shape is not W^l's (the caller checks stored state first).
    fn set_state(&mut self, l: usize, slots: &[ArrayView2<'_, T>]);
    /// Whether an evaluation may give whole blocks of rows to helper threads (false when the kernel
    /// splits its own products over the threads).
    fn blocks_on_threads(&self) -> bool;
    /// A copy for a helper thread, with the weights this one holds.
    fn boxed_clone(&self) -> Box<dyn Products<T>>;
}

/// The products of `kernel` for a network with layer sizes `sizes` (n_0..n_L); `training` adds what
/// backward passes need.
pub fn build<T: Lane + Vector + LinalgScalar + RuleElem>(
    kernel: Kernel,
    sizes: &[usize],
    training: bool,
) -> Box<dyn Products<T>> {
    match kernel {
        Kernel::Chain => Box::new(ChainProducts::new(sizes, training)),
        Kernel::Lanes => Box::new(LanesProducts(RowState::new(sizes))),
        Kernel::Gemm => Box::new(GemmProducts(RowState::new(sizes))),
    }
}

/// A rule's state for each W^l in row-major layout, with a buffer for the summed gradient: what the
/// kernels that update the model's W^l in place keep.
#[derive(Clone)]
struct RowState<T> {
    /// Shapes of W^1..W^L.
    shapes: Vec<(usize, usize)>,
    /// Per layer, one array per slot (allocated at the first update with state).
    slots: Vec<Vec<Array2<T>>>,
    /// Per layer, S of the last update with state (allocated with the slots).
    grad: Vec<Array2<T>>,
}

impl<T: Copy + Default + RuleElem> RowState<T> {
    fn new(sizes: &[usize]) -> Self {
        let shapes: Vec<(usize, usize)> = sizes.windows(2).map(|s| (s[1], s[0])).collect();
        RowState {
            slots: vec![Vec::new(); shapes.len()],
            grad: vec![Array2::default((0, 0)); shapes.len()],
            shapes,
        }
    }

    /// Allocate what `rule` needs for W^l.
    fn reserve(&mut self, l: usize, rule: &Rule<T>) {
        let shape = self.shapes[l];
        if self.grad[l].dim() != shape {
            self.grad[l] = Array2::default(shape);
        }
        while self.slots[l].len() < rule.slots() {
            self.slots[l].push(Array2::default(shape));
        }
    }

    /// `rule` on W^l (`w`, row-major) with S from `gradient`.
    fn update(
        &mut self,
        l: usize,
        mut w: ArrayViewMut2<'_, T>,
        rule: &Rule<T>,
        gradient: impl FnOnce(ArrayViewMut2<'_, T>),
    ) {
        self.reserve(l, rule);
        gradient(self.grad[l].view_mut());
        let s = self.grad[l].as_slice().expect(CONTIGUOUS);
        let mut state: Vec<&mut [T]> = self.slots[l]
            .iter_mut()
            .map(|x| x.as_slice_mut().expect(CONTIGUOUS))
            .collect();
        rule::apply(rule, w.as_slice_mut().expect(CONTIGUOUS), s, &mut state);
    }

    fn state(&self, l: usize) -> Vec<Array2<T>> {
        self.slots[l].clone()
    }

    fn set_state(&mut self, l: usize, slots: &[ArrayView2<'_, T>]) {
        assert!(slots.iter().all(|x| x.dim() == self.shapes[l]));
        self.slots[l] = slots.iter().map(|x| x.to_owned()).collect();
    }
}

/// A contiguous row-major view as a kernel matrix.
fn mat<T>(a: ArrayView2<'_, T>) -> Mat<'_, T> {
    let (rows, cols) = a.dim();
    let data = a.to_slice().expect(CONTIGUOUS);
    Mat {
        data,
        rows,
        cols,
        ld: cols,
    }
}

/// A contiguous row-major mutable view as a kernel matrix.
fn mat_mut<T>(z: ArrayViewMut2<'_, T>) -> MatMut<'_, T> {
    let (rows, cols) = z.dim();
    let data = z.into_slice().expect(CONTIGUOUS);
    MatMut {
        data,
        rows,
        cols,
        ld: cols,
    }
}

/// The coefficients of (Delta^l)^T: element (r, t) = delta[t][r].
fn transposed<T>(delta: ArrayView2<'_, T>) -> Coef<'_, T> {
    let n_l = delta.ncols();
    Coef {
        data: delta.to_slice().expect(CONTIGUOUS),
        row_stride: 1,
        term_stride: n_l,
    }
}

/// Delta^l W^l through the lanes contract's combination: row i of the output is sum_j delta[i][j] W[j].
fn backward_lanes<T: Lane + Vector>(
    delta: ArrayView2<'_, T>,
    w: ArrayView2<'_, T>,
    out: ArrayViewMut2<'_, T>,
) {
    let n_l = delta.ncols();
    let coef = Coef {
        data: delta.to_slice().expect(CONTIGUOUS),
        row_stride: n_l,
        term_stride: 1,
    };
    lanes::combine(coef, mat(w), mat_mut(out), Epilogue::Assign);
}

/// (Delta^l)^T A^(l-1) through the lanes contract's combination (the chain contract's too).
fn gradient_lanes<T: Lane + Vector>(
    delta: ArrayView2<'_, T>,
    a: ArrayView2<'_, T>,
    out: ArrayViewMut2<'_, T>,
) {
    lanes::combine(transposed(delta), mat(a), mat_mut(out), Epilogue::Assign);
}

/// The chain kernels (every new run's): each W^l in panels while steps run; every output one FMA chain
/// in k order. Delta^(l-1) = Delta^l W^l and the summed gradient use the lanes contract's combination,
/// which is the chain contract's too.
#[derive(Clone)]
struct ChainProducts<T> {
    /// W^l in panels, l = 1..L.
    panels: Vec<Panels<T>>,
    /// For l >= 2 (index l - 2), when training: W^l row-major as before its update, for Delta^l W^l.
    unpacked: Vec<ndarray::Array2<T>>,
    /// Whether `panels` hold steps the model's W^l do not have yet.
    behind: bool,
    /// Per layer, a rule's state in panels like W^l's, one per slot (allocated at the first update
    /// with state).
    slots: Vec<Vec<Panels<T>>>,
}

impl<T: Lane + Vector + LinalgScalar> ChainProducts<T> {
    fn new(sizes: &[usize], training: bool) -> Self {
        let panels = sizes.windows(2).map(|s| Panels::new(s[1], s[0])).collect();
        let unpacked = if training {
            sizes
                .windows(2)
                .skip(1)
                .map(|s| ndarray::Array2::zeros((s[1], s[0])))
                .collect()
        } else {
            Vec::new()
        };
        let layers = sizes.len().saturating_sub(1);
        ChainProducts {
            panels,
            unpacked,
            behind: false,
            slots: vec![Vec::new(); layers],
        }
    }
}

impl<T: Lane + Vector + LinalgScalar + RuleElem> Products<T> for ChainProducts<T> {
    fn load(&mut self, w: &[ArrayView2<'_, T>]) {
        assert!(
            !self.behind,
            "the workspace holds SGD steps the model does not have: store them first"
        );
        for (p, w) in self.panels.iter_mut().zip(w) {
            p.pack(mat(w.view()));
        }
    }

    fn store(&mut self, w: &mut [ArrayViewMut2<'_, T>]) {
        if !self.behind {
            return;
        }
        for (p, w) in self.panels.iter().zip(w) {
            p.unpack(mat_mut(w.view_mut()));
        }
        self.behind = false;
    }

    fn holds_weights(&self) -> bool {
        true
    }

    fn forward(
        &self,
        l: usize,
        a: ArrayView2<'_, T>,
        _w: ArrayView2<'_, T>,
        z: ArrayViewMut2<'_, T>,
    ) {
        chain::forward(mat(a), &self.panels[l], mat_mut(z));
    }

    fn backward(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        _w: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) {
        // W^l as it is now lives in its panels.
        let u = &mut self.unpacked[l - 1];
        self.panels[l].unpack(mat_mut(u.view_mut()));
        backward_lanes(delta, u.view(), out);
    }

    fn gradient(&self, delta: ArrayView2<'_, T>, a: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>) {
        gradient_lanes(delta, a, out);
    }

    fn update(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        _w: ArrayViewMut2<'_, T>,
        alpha: T,
        next: Option<Next<'_, T>>,
    ) -> bool {
        // W^l (in panels) <- fma(alpha, chain over i of delta[i][j] a[i][k], W^l); with `next`, its Z^1
        // panel by panel as each is updated.
        let with_next = next.is_some();
        let next = next.map(|(a2, z)| (mat(a2), mat_mut(z)));
        chain::update_then_forward(mat(delta), mat(a), &mut self.panels[l], alpha, next);
        self.behind = true;
        with_next
    }

    fn update_rule(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        _w: ArrayViewMut2<'_, T>,
        rule: &Rule<T>,
        next: Option<Next<'_, T>>,
    ) -> bool {
        let (rows, cols) = (self.panels[l].rows(), self.panels[l].cols());
        while self.slots[l].len() < rule.slots() {
            self.slots[l].push(Panels::new(rows, cols));
        }
        // S, the rule and the next product panel by panel, each block of S while it is in cache.
        let with_next = next.is_some();
        let next = next.map(|(a2, z)| (mat(a2), mat_mut(z)));
        chain::rule_then_forward(
            mat(delta),
            mat(a),
            &mut self.panels[l],
            &mut self.slots[l],
            rule,
            next,
        );
        self.behind = true;
        with_next
    }

    fn state(&self, l: usize) -> Vec<Array2<T>> {
        let p = &self.panels[l];
        self.slots[l]
            .iter()
            .map(|s| {
                let mut out = Array2::default((p.rows(), p.cols()));
                s.unpack(mat_mut(out.view_mut()));
                out
            })
            .collect()
    }

    fn set_state(&mut self, l: usize, slots: &[ArrayView2<'_, T>]) {
        let (rows, cols) = (self.panels[l].rows(), self.panels[l].cols());
        self.slots[l] = slots
            .iter()
            .map(|x| {
                let mut p = Panels::new(rows, cols);
                p.pack(mat(x.view()));
                p
            })
            .collect();
    }

    fn blocks_on_threads(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Products<T>> {
        Box::new(self.clone())
    }
}

/// The lanes kernels (lanes16 in f32, lanes8 in f64): what runs were trained with before the chain
/// kernels; they read and update the model's W^l in place.
#[derive(Clone)]
struct LanesProducts<T>(RowState<T>);

impl<T: Lane + Vector + LinalgScalar + RuleElem> Products<T> for LanesProducts<T> {
    fn load(&mut self, _w: &[ArrayView2<'_, T>]) {}

    fn store(&mut self, _w: &mut [ArrayViewMut2<'_, T>]) {}

    fn holds_weights(&self) -> bool {
        false
    }

    fn forward(
        &self,
        _l: usize,
        a: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        z: ArrayViewMut2<'_, T>,
    ) {
        lanes::abt(mat(a), mat(w), mat_mut(z));
    }

    fn backward(
        &mut self,
        _l: usize,
        delta: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        out: ArrayViewMut2<'_, T>,
    ) {
        backward_lanes(delta, w, out);
    }

    fn gradient(&self, delta: ArrayView2<'_, T>, a: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>) {
        gradient_lanes(delta, a, out);
    }

    fn update(
        &mut self,
        _l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        w: ArrayViewMut2<'_, T>,
        alpha: T,
        next: Option<Next<'_, T>>,
    ) -> bool {
        match next {
            // W[j][k] = fma(alpha, sum_i d[i][j] a[i][k], W[j][k]), then Z = A_next W^T, block by block.
            Some((a2, z)) => {
                lanes::update_then_abt(
                    transposed(delta),
                    mat(a),
                    mat_mut(w),
                    alpha,
                    mat(a2),
                    mat_mut(z),
                );
                true
            }
            None => {
                lanes::combine(transposed(delta), mat(a), mat_mut(w), Epilogue::Axpy(alpha));
                false
            }
        }
    }

    fn update_rule(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        w: ArrayViewMut2<'_, T>,
        rule: &Rule<T>,
        _next: Option<Next<'_, T>>,
    ) -> bool {
        self.0
            .update(l, w, rule, |out| gradient_lanes(delta, a, out));
        false
    }

    fn state(&self, l: usize) -> Vec<Array2<T>> {
        self.0.state(l)
    }

    fn set_state(&mut self, l: usize, slots: &[ArrayView2<'_, T>]) {
        self.0.set_state(l, slots)
    }

    fn blocks_on_threads(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Products<T>> {
        Box::new(self.clone())
    }
}

/// matrixmultiply's GEMM (`general_mat_mul`): f64 runs stored before lanes8. Its bits depend on the
/// GEMM kernel the CPU selects; it splits its own products over threads.
#[derive(Clone)]
struct GemmProducts<T>(RowState<T>);

impl<T: LinalgScalar + Send + Sync + RuleElem> Products<T> for GemmProducts<T> {
    fn load(&mut self, _w: &[ArrayView2<'_, T>]) {}

    fn store(&mut self, _w: &mut [ArrayViewMut2<'_, T>]) {}

    fn holds_weights(&self) -> bool {
        false
    }

    fn forward(
        &self,
        _l: usize,
        a: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        mut z: ArrayViewMut2<'_, T>,
    ) {
        general_mat_mul(T::one(), &a, &w.t(), T::zero(), &mut z);
    }

    fn backward(
        &mut self,
        _l: usize,
        delta: ArrayView2<'_, T>,
        w: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) {
        general_mat_mul(T::one(), &delta, &w, T::zero(), &mut out);
    }

    fn gradient(
        &self,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        mut out: ArrayViewMut2<'_, T>,
    ) {
        general_mat_mul(T::one(), &delta.t(), &a, T::zero(), &mut out);
    }

    fn update(
        &mut self,
        _l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        mut w: ArrayViewMut2<'_, T>,
        alpha: T,
        _next: Option<Next<'_, T>>,
    ) -> bool {
        general_mat_mul(alpha, &delta.t(), &a, T::one(), &mut w);
        false
    }

    fn update_rule(
        &mut self,
        l: usize,
        delta: ArrayView2<'_, T>,
        a: ArrayView2<'_, T>,
        w: ArrayViewMut2<'_, T>,
        rule: &Rule<T>,
        _next: Option<Next<'_, T>>,
    ) -> bool {
        self.0.update(l, w, rule, |out| {
            general_mat_mul(T::one(), &delta.t(), &a, T::zero(), &mut { out })
        });
        false
    }

    fn state(&self, l: usize) -> Vec<Array2<T>> {
        self.0.state(l)
    }

    fn set_state(&mut self, l: usize, slots: &[ArrayView2<'_, T>]) {
        self.0.set_state(l, slots)
    }

    fn blocks_on_threads(&self) -> bool {
        false
    }

    fn boxed_clone(&self) -> Box<dyn Products<T>> {
        Box::new(self.clone())
    }
}
