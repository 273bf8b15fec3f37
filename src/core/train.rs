//! The training loop: one run from its config and data to per-epoch metrics and final weights.
//!
//! [`train`] reads top to bottom: init from the init stream; per epoch, a fresh permutation from the shuffle
//! stream, then for each batch gather, forward, backward with the fused SGD update (the next batch's forward pass
//! starting inside the update of W^1, see [`Workspace::step`]); then evaluate the
//! training, validation (if held out) and test samples and hand the epoch to an [`Observer`] (the store
//! writes it; `verify` compares it).

use std::time::Instant;

use crate::core::config::{Dtype, RunConfig};
use crate::core::confusion::{Errors, errors};
use crate::core::data::Dataset;
use crate::core::early::EarlyStop;
use crate::core::kernel::Kernel;
use crate::core::loader::Loader;
use crate::core::math::Math;
use crate::core::model::{Mlp, Snapshot};
use crate::core::optim::Optimizer;
use crate::core::real::Real;
use crate::core::rng::{Stream, StreamRng, StreamState};
use crate::core::workspace::{ClassCounts, EVAL_BLOCK, Workspace, evaluate, evaluate_classes};
use crate::error::{Error, Result};

/// One epoch's results. Losses are mean cross-entropy, accuracies fractions in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// On the held-out validation samples (`data.validation`); `None` without a split.
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    /// The learning rate of the epoch's first step (its schedule's value there; `core::optim`); `None`
    /// in epochs stored before version 6 of the store.
    pub learning_rate: Option<f64>,
    /// Samples and correct predictions per class (indexed by the label) on the test and the validation
    /// split; `None` in epochs stored before schema 9.
    pub test_classes: Option<ClassCounts>,
    pub val_classes: Option<ClassCounts>,
    /// Wall seconds of the SGD steps.
    pub train_seconds: f64,
    /// Wall seconds of the epoch, evaluation included.
    pub seconds: f64,
}

impl EpochMetrics {
    /// A loss that is NaN or infinite ends the run as diverged.
    pub fn diverged(&self) -> bool {
        !(self.train_loss.is_finite()
            && self.test_loss.is_finite()
            && self.val_loss.is_none_or(f64::is_finite))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All epochs ran; the final parameters.
    Completed(Snapshot),
    /// The loss became NaN or infinite at this epoch; the parameters then.
    Diverged { epoch: usize, last: Snapshot },
    /// The observer asked to stop; `epoch` epochs are complete and stored.
    Stopped { epoch: usize },
}

/// Everything needed to continue a run exactly after `epoch`: its parameters then, where the shuffle
/// stream stood (the init stream is not needed after initialisation) and the optimizer's state (the
/// step count is epoch * steps per epoch, so only the rule's arrays are kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub epoch: usize,
    pub params: Snapshot,
    pub shuffle: StreamState,
    /// Velocities or Adam's moments, as tensors `weight.<slot>` / `bias.<slot>` per layer, and early
    /// stopping's counters and best weights (`core::early`); `None` when the run keeps neither.
    pub state: Option<Snapshot>,
    /// Set when early stopping ends the run at this epoch: why (its `params` are then the final weights).
    pub stopped: Option<String>,
    /// When the run completes at this epoch: where its final weights (`params`) err on the test and
    /// validation splits (`core::confusion`).
    pub errors: Option<Errors>,
}

/// What the observer wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Receives a run's progress. The store implements it to write each epoch in one transaction.
pub trait Observer {
    /// The initial parameters, before any step (not called when resuming).
    fn on_start(&mut self, initial: &Snapshot) -> Result<()>;
    /// After each batch: the epoch, batches done in it, batches per epoch, and the batch's summed loss
    /// (before its update). `Stop` abandons the epoch at once.
    fn on_batch(&mut self, _epoch: usize, _done: usize, _total: usize, _loss_sum: f64) -> Control {
        Control::Continue
    }
    /// After each epoch, with the checkpoint at its end.
    fn on_epoch(&mut self, metrics: &EpochMetrics, checkpoint: &Checkpoint) -> Result<Control>;
}

/// Train one run, from the start or from `resume`, with the kernel of every new run. The config must
/// have passed `validate` and `validate_against_data` for `data`. A resumed run ends bit-identical to the
/// same run left alone. [`Training`] says more (another kernel, separate steps).
pub fn train(
    cfg: &RunConfig,
    data: &Dataset,
    observer: &mut dyn Observer,
    resume: Option<&Checkpoint>,
) -> Result<Outcome> {
    let mut training = Training::new(cfg, data);
    if let Some(c) = resume {
        training = training.resume_from(c);
    }
    training.run(observer)
}

/// How a step meets the next one. The bits are the same either way (a test compares them); the bench
/// times both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// The update of W^1 and the next batch's Z^1 = A^0 (W^1)^T in one pass over W^1 (with the chain or lanes
    /// kernels; see [`Workspace::step`]).
    Fused,
    /// Every product on its own: the update of W^1 ends one step, the next step reads W^1 again.
    Separate,
}

/// One run to train: its config and data, and how (defaults: from the start, the kernel of every new
/// run, fused steps). [`Training::run`] trains it.
#[derive(Clone, Copy)]
pub struct Training<'a> {
    cfg: &'a RunConfig,
    data: &'a Dataset,
    resume: Option<&'a Checkpoint>,
    kernel: Kernel,
    math: Math,
    steps: Steps,
}

impl<'a> Training<'a> {
    /// `cfg` on `data`, which it must have been validated against.
    pub fn new(cfg: &'a RunConfig, data: &'a Dataset) -> Self {
        Training {
            cfg,
            data,
            resume: None,
            kernel: Kernel::for_run(cfg.model.dtype),
            math: Math::for_run(),
            steps: Steps::Fused,
        }
    }

    /// Continue from `checkpoint` (its parameters and shuffle stream) instead of initialising.
    pub fn resume_from(mut self, checkpoint: &'a Checkpoint) -> Self {
        self.resume = Some(checkpoint);
        self
    }

    /// The matrix products of `kernel`: `verify` and a resumed run keep the kernel a stored run was
    /// trained with (the lanes kernels for runs of versions before the chain kernels; an f64 run of a
    /// version before lanes8 used matrixmultiply's GEMM).
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// The elementary functions of `math`: `verify` and a resumed run keep those a stored run was
    /// trained with (the platform's C library for runs before schema version 7).
    pub fn math(mut self, math: Math) -> Self {
        self.math = math;
        self
    }

    /// Schedule the steps as `steps` says (the same bits either way).
    pub fn steps(mut self, steps: Steps) -> Self {
        self.steps = steps;
        self
    }

    /// Train, reporting to `observer`.
    pub fn run(&self, observer: &mut dyn Observer) -> Result<Outcome> {
        match self.cfg.model.dtype {
            Dtype::F32 => self.run_typed::<f32>(observer),
            Dtype::F64 => self.run_typed::<f64>(observer),
        }
    }

    /// The training loop, top to bottom.
    fn run_typed<F: Real>(&self, observer: &mut dyn Observer) -> Result<Outcome> {
        let Training {
            cfg,
            data,
            resume,
            kernel,
            math,
            steps,
        } = *self;
        let (model_cfg, t) = (&cfg.model, &cfg.train);
        let d = &cfg.data;
        let splits = data.splits(d.limit_train, d.validation, d.limit_test);
        let (train_set, val_set, test_set) = (splits.train, splits.validation, splits.test);

        // Parameters from the init stream; data order from the shuffle stream (independent of the
        // architecture). A resumed run takes both from its checkpoint instead.
        let (mut model, shuffle, first_epoch) = match resume {
            None => {
                let mut init = StreamRng::new(t.seed, Stream::Init).with_math(math);
                let model = Mlp::<F>::init(
                    &model_cfg.sizes,
                    model_cfg.activation,
                    model_cfg.init,
                    &mut init,
                );
                observer.on_start(&model.snapshot())?;
                (model, StreamRng::new(t.seed, Stream::Shuffle), 1)
            }
            Some(c) => {
                let model = Mlp::<F>::from_snapshot(&c.params, model_cfg.activation)
                    .filter(|m| m.sizes() == model_cfg.sizes)
                    .ok_or_else(|| {
                        // The caller checks a checkpoint against its run's config before resuming from it.
                        Error::internal(format!(
                            "the checkpoint of epoch {} does not fit the model {:?} {}",
                            c.epoch,
                            model_cfg.sizes,
                            model_cfg.dtype.as_str()
                        ))
                    })?;
                (model, StreamRng::from_state(c.shuffle), c.epoch + 1)
            }
        };
        model.realign();
        let mut loader = Loader::new(train_set.len(), t.batch_size, t.drop_last, shuffle);
        // The run's kernel does its products in training and evaluation alike (see `kernel`).
        let hidden = model_cfg.sizes.len() - 2;
        let mut ws = Workspace::<F>::new(&model_cfg.sizes, t.batch_size)
            .with_kernel(kernel)
            .with_math(math)
            .with_fusion(steps == Steps::Fused)
            .with_dropout(&model_cfg.dropout.rates(hidden), t.seed);
        let eval_rows = EVAL_BLOCK.min(
            train_set
                .len()
                .max(test_set.len())
                .max(val_set.map_or(0, |v| v.len())),
        );
        let mut eval_ws = Workspace::<F>::for_eval(&model_cfg.sizes, eval_rows)
            .with_kernel(kernel)
            .with_math(math);
        let batches = loader.num_batches();
        // The learning rate and rule of each step, from the step's index alone.
        let optimizer = Optimizer::new(cfg, batches);
        // Early stopping's counters (and best weights) continue from the checkpoint too.
        let mut early = EarlyStop::new(cfg);
        if let (Some(c), Some(e)) = (resume, early.as_mut()) {
            let state = c.state.as_ref().ok_or_else(|| {
                Error::internal(format!(
                    "the checkpoint of epoch {} has no early-stopping counters",
                    c.epoch
                ))
            })?;
            e.restore(state).map_err(|m| {
                Error::internal(format!("the checkpoint of epoch {}: {m}", c.epoch))
            })?;
        }
        if let Some(c) = resume {
            match &c.state {
                Some(state) => ws.set_optimizer_state(state).map_err(|e| {
                    Error::internal(format!("the checkpoint of epoch {}: {e}", c.epoch))
                })?,
                None if !optimizer.slot_names().is_empty() => {
                    return Err(Error::internal(format!(
                        "the checkpoint of epoch {} has no optimizer state for {}",
                        c.epoch,
                        cfg.optimizer.describe()
                    )));
                }
                None => {}
            }
        }

        for epoch in first_epoch..=t.epochs {
            let start = Instant::now();
            let first_step = (epoch as u64 - 1) * optimizer.steps_per_epoch();
            ws.set_step(first_step); // dropout's masks are those of each step's index
            loader.shuffle(); // this epoch's order, from the shuffle stream
            let mut order = loader.batches();
            let mut stats = order.next().map(|first| {
                ws.gather(train_set, first.iter().copied()); // a^0 = x / 255, one sample per row
                ws.forward(&model) // z^l = W^l a^(l-1) + b^l, a^l = act(z^l), a^L = softmax(z^L)
            });
            let mut done = 0;
            while let Some(batch_stats) = stats {
                // The next batch is staged so that its forward pass follows this step's update of W^1 in the
                // same pass over W^1 (the same bits as one step after the other).
                if let Some(next) = order.next() {
                    ws.stage(train_set, next);
                }
                // delta^L = a^L - y, delta^l, the update (plain SGD: w -= (lr_t / n) sum of gradients);
                // then the next batch's forward.
                let rule = optimizer.rule::<F>(first_step + done as u64, ws.batch_len());
                stats = ws.step(&mut model, rule);
                done += 1;
                if observer.on_batch(epoch, done, batches, batch_stats.loss_sum) == Control::Stop {
                    return Ok(Outcome::Stopped { epoch: epoch - 1 });
                }
            }
            let train_seconds = start.elapsed().as_secs_f64();

            // Evaluate the model at the end of the epoch on every split; hand over metrics and checkpoint.
            let (train_loss, train_acc) = evaluate(&model, train_set, &mut eval_ws);
            let val = val_set.map(|v| evaluate_classes(&model, v, &mut eval_ws));
            let (test_loss, test_acc, test_classes) =
                evaluate_classes(&model, test_set, &mut eval_ws);
            let metrics = EpochMetrics {
                epoch,
                train_loss,
                train_acc,
                test_loss,
                test_acc,
                val_loss: val.as_ref().map(|v| v.0),
                val_acc: val.as_ref().map(|v| v.1),
                test_classes: Some(test_classes),
                val_classes: val.map(|v| v.2),
                learning_rate: Some(optimizer.learning_rate(first_step)),
                train_seconds,
                seconds: start.elapsed().as_secs_f64(),
            };
            // Early stopping decides whether this epoch is the last; a run that ends (stopped, or at its
            // last epoch) with restore_best keeps its best epoch's weights.
            let stopped = early
                .as_mut()
                .filter(|_| !metrics.diverged())
                .and_then(|e| {
                    let val = (metrics.val_loss, metrics.val_acc);
                    e.observe(epoch, val, || model.snapshot())
                });
            let ends = stopped.is_some() || (epoch == t.epochs && !metrics.diverged());
            let params = match &early {
                Some(e) if ends => e.final_params(model.snapshot()),
                _ => model.snapshot(),
            };
            // A run that ends here: where its final weights err (one more forward pass over the test and
            // validation samples).
            let errors = if ends {
                let last =
                    Mlp::<F>::from_snapshot(&params, model_cfg.activation).ok_or_else(|| {
                        Error::internal("the final weights do not fit their own model".to_string())
                    })?;
                Some(errors(&last, test_set, val_set, &mut eval_ws))
            } else {
                None
            };
            let mut state = ws.optimizer_state().map_or_else(Vec::new, |s| s.tensors);
            state.extend(early.iter().flat_map(EarlyStop::tensors));
            // The order the store reads them back in, which their hash is taken over: by layer, the
            // bias slots after the others, then by name.
            state.sort_by(|a, b| {
                (a.layer, a.param.starts_with("bias."), a.param).cmp(&(
                    b.layer,
                    b.param.starts_with("bias."),
                    b.param,
                ))
            });
            let checkpoint = Checkpoint {
                epoch,
                params,
                shuffle: loader.rng().state(),
                state: (!state.is_empty()).then_some(Snapshot {
                    dtype: F::DTYPE,
                    tensors: state,
                }),
                stopped,
                errors,
            };
            let control = observer.on_epoch(&metrics, &checkpoint)?;
            if metrics.diverged() {
                return Ok(Outcome::Diverged {
                    epoch,
                    last: checkpoint.params,
                });
            }
            if ends {
                return Ok(Outcome::Completed(checkpoint.params));
            }
            if control == Control::Stop && epoch < t.epochs {
                return Ok(Outcome::Stopped { epoch });
            }
        }
        Ok(Outcome::Completed(model.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::data::{self, DataFormat};

    struct Last(Vec<EpochMetrics>);
    impl Observer for Last {
        fn on_start(&mut self, _: &Snapshot) -> Result<()> {
            Ok(())
        }
        fn on_epoch(&mut self, m: &EpochMetrics, _: &Checkpoint) -> Result<Control> {
            self.0.push(m.clone());
            Ok(Control::Continue)
        }
    }

    fn outcome(
        cfg: &RunConfig,
        ds: &Dataset,
        kernel: Kernel,
        steps: Steps,
    ) -> (String, Vec<EpochMetrics>) {
        let mut obs = Last(Vec::new());
        let out = Training::new(cfg, ds)
            .kernel(kernel)
            .steps(steps)
            .run(&mut obs)
            .expect("trains");
        let Outcome::Completed(snapshot) = out else {
            panic!("the run did not complete: {out:?}");
        };
        (snapshot.sha256(), obs.0)
    }

    /// Fusing the update of W^1 with the next batch's forward pass changes when each weight is read,
    /// never a bit: the same weights and losses as one product after another, in f32 and f64, with
    /// full batches and with a short last one (a staged batch of fewer rows).
    #[test]
    fn fused_steps_give_the_bits_of_separate_steps_on_mnist() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
        let ds = data::load(std::path::Path::new(dir), DataFormat::Auto).expect("shipped MNIST");
        for (dtype, batch, drop_last, kernel) in [
            (Dtype::F32, 10, true, Kernel::Lanes),
            (Dtype::F64, 10, true, Kernel::Lanes),
            (Dtype::F32, 64, false, Kernel::Lanes),
            (Dtype::F64, 7, false, Kernel::Lanes),
            (Dtype::F32, 10, true, Kernel::Chain),
            (Dtype::F64, 10, true, Kernel::Chain),
            (Dtype::F32, 64, false, Kernel::Chain),
            (Dtype::F64, 7, false, Kernel::Chain),
        ] {
            let mut cfg = RunConfig::default();
            cfg.data.limit_train = Some(1500);
            cfg.data.limit_test = Some(300);
            cfg.model.sizes = vec![784, 45, 10];
            cfg.model.dtype = dtype;
            cfg.train.batch_size = batch;
            cfg.train.drop_last = drop_last;
            cfg.train.epochs = 2;
            let (fused, fused_epochs) = outcome(&cfg, &ds, kernel, Steps::Fused);
            let (separate, separate_epochs) = outcome(&cfg, &ds, kernel, Steps::Separate);
            let what = format!("{dtype:?} batch {batch} {kernel:?}");
            assert_eq!(fused, separate, "weights, {what}");
            let bits = |e: &[EpochMetrics]| -> Vec<[u64; 4]> {
                e.iter()
                    .map(|m| [m.train_loss, m.train_acc, m.test_loss, m.test_acc].map(f64::to_bits))
                    .collect()
            };
            assert_eq!(
                bits(&fused_epochs),
                bits(&separate_epochs),
                "epochs, {what}"
            );
            // The bits compared are those of a model that learned.
            assert!(
                fused_epochs[1].test_acc > 0.75,
                "{what}: {:?}",
                fused_epochs[1]
            );
        }
    }

    /// The same for the rules with state: the update of W^1 (S, the rule, then the next Z^1 panel by
    /// panel) has the bits of the products one after the other.
    #[test]
    fn fused_rule_steps_give_the_bits_of_separate_steps_on_mnist() {
        use crate::core::config::OptimizerKind;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
        let ds = data::load(std::path::Path::new(dir), DataFormat::Auto).expect("shipped MNIST");
        for (dtype, kind, momentum, batch, dropout) in [
            (Dtype::F32, OptimizerKind::Sgd, 0.9, 10, 0.0),
            (Dtype::F64, OptimizerKind::Sgd, 0.9, 7, 0.2),
            (Dtype::F32, OptimizerKind::Adamw, 0.0, 10, 0.3),
            (Dtype::F64, OptimizerKind::Adam, 0.0, 33, 0.0),
        ] {
            let mut cfg = RunConfig::default();
            cfg.data.limit_train = Some(1000);
            cfg.data.limit_test = Some(300);
            cfg.model.sizes = vec![784, 45, 10];
            cfg.model.dtype = dtype;
            cfg.train.batch_size = batch;
            cfg.train.drop_last = false;
            cfg.train.epochs = 2;
            cfg.train.learning_rate = if momentum > 0.0 { 0.02 } else { 0.002 };
            cfg.optimizer.kind = kind;
            cfg.optimizer.momentum = momentum;
            cfg.optimizer.weight_decay = 0.01;
            cfg.model.dropout = crate::core::config::Dropout::Every(dropout);
            let (fused, a) = outcome(&cfg, &ds, Kernel::Chain, Steps::Fused);
            let (separate, b) = outcome(&cfg, &ds, Kernel::Chain, Steps::Separate);
            assert_eq!(fused, separate, "{dtype:?} {kind:?}");
            assert_eq!(
                a.iter().map(|m| m.train_loss.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|m| m.train_loss.to_bits()).collect::<Vec<_>>()
            );
            assert!(a[1].test_acc > 0.75, "{dtype:?} {kind:?}: {:?}", a[1]);
        }
    }
}
