//! The training loop: one run from its config and data to per-epoch metrics and final weights.
//!
//! [`train`] reads top to bottom: init from the init stream; per epoch, a fresh permutation from the shuffle
//! stream, then for each batch gather, forward, backward with the fused SGD update; then evaluate both splits
//! and hand the epoch to an [`Observer`] (the store writes it; `verify` compares it).

use std::time::Instant;

use crate::data::Dataset;
use crate::error::Result;
use crate::loader::Loader;
use crate::model::{EVAL_BLOCK, Mlp, Real, Snapshot, Update, Workspace, evaluate};
use crate::rng::{Stream, StreamRng};
use crate::spec::{Dtype, RunConfig};

/// One epoch's results. Losses are mean cross-entropy, accuracies fractions in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// Wall seconds of the SGD steps.
    pub train_seconds: f64,
    /// Wall seconds of the epoch, evaluation included.
    pub seconds: f64,
}

impl EpochMetrics {
    /// A loss that is NaN or infinite ends the run as diverged.
    pub fn diverged(&self) -> bool {
        !(self.train_loss.is_finite() && self.test_loss.is_finite())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All epochs ran; the final parameters.
    Completed(Snapshot),
    /// The loss became NaN or infinite at this epoch; the parameters then.
    Diverged { epoch: usize, last: Snapshot },
    /// The observer asked to stop after this epoch.
    Stopped { epoch: usize },
}

/// What the observer wants after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Receives a run's progress. The store implements it to write each epoch in one transaction.
pub trait Observer {
    /// The initial parameters, before any step.
    fn on_start(&mut self, initial: &Snapshot) -> Result<()>;
    /// After each batch: (batches done this epoch, batches per epoch). For progress display only.
    fn on_batch(&mut self, _done: usize, _total: usize) {}
    /// After each epoch, with the parameters at its end.
    fn on_epoch(&mut self, metrics: &EpochMetrics, params: &Snapshot) -> Result<Control>;
}

/// Train one run. The config must have passed `validate` and `validate_against_data` for `data`.
pub fn train(cfg: &RunConfig, data: &Dataset, observer: &mut dyn Observer) -> Result<Outcome> {
    match cfg.model.dtype {
        Dtype::F32 => train_typed::<f32>(cfg, data, observer),
        Dtype::F64 => train_typed::<f64>(cfg, data, observer),
    }
}

fn train_typed<F: Real>(
    cfg: &RunConfig,
    data: &Dataset,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let (model_cfg, t) = (&cfg.model, &cfg.train);
    let train_set = data.train.prefix(cfg.data.limit_train);
    let test_set = data.test.prefix(cfg.data.limit_test);

    // Parameters from the init stream; data order from the shuffle stream (independent of the architecture).
    let mut model = Mlp::<F>::init(
        &model_cfg.sizes,
        model_cfg.activation,
        model_cfg.init,
        &mut StreamRng::new(t.seed, Stream::Init),
    );
    observer.on_start(&model.snapshot())?;
    let mut loader = Loader::new(
        train_set.len(),
        t.batch_size,
        t.drop_last,
        StreamRng::new(t.seed, Stream::Shuffle),
    );
    let mut ws = Workspace::<F>::new(&model_cfg.sizes, t.batch_size);
    let mut eval_ws = Workspace::<F>::for_eval(
        &model_cfg.sizes,
        EVAL_BLOCK.min(train_set.len().max(test_set.len())),
    );
    let batches = loader.num_batches();

    for epoch in 1..=t.epochs {
        let start = Instant::now();
        loader.shuffle();
        for (i, batch) in loader.batches().enumerate() {
            ws.gather(train_set, batch.iter().copied()); // a^0 = x / 255, one sample per row
            ws.forward(&model); // z^l = W^l a^(l-1) + b^l, a^l = act(z^l), a^L = softmax(z^L)
            ws.backward(
                &mut model,
                Update::Sgd {
                    learning_rate: t.learning_rate,
                },
            ); // delta^l, w -= lr/n sum
            observer.on_batch(i + 1, batches);
        }
        let train_seconds = start.elapsed().as_secs_f64();

        let (train_loss, train_acc) = evaluate(&model, train_set, &mut eval_ws);
        let (test_loss, test_acc) = evaluate(&model, test_set, &mut eval_ws);
        let metrics = EpochMetrics {
            epoch,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            train_seconds,
            seconds: start.elapsed().as_secs_f64(),
        };
        let params = model.snapshot();
        let control = observer.on_epoch(&metrics, &params)?;
        if metrics.diverged() {
            return Ok(Outcome::Diverged {
                epoch,
                last: params,
            });
        }
        if control == Control::Stop && epoch < t.epochs {
            return Ok(Outcome::Stopped { epoch });
        }
    }
    Ok(Outcome::Completed(model.snapshot()))
}
