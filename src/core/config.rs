//! A run's configuration: the serde types of `[data]`, `[model]`, `[train]` and `[optimizer]` with their documented
//! defaults, and the checks that turn a parsed config into one that may be trained ([`RunConfig::validate`],
//! [`RunConfig::validate_against_data`]). A run is a pure function of its [`RunConfig`] and its data bytes.
//!
//! Owns no file parsing and no sweep (those are `sweep::spec`'s); imports nothing above `core`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::data::{DataFormat, MAX_IMAGE_PIXELS, NUM_CLASSES};
use crate::core::search::Metric;
use crate::error::ConfigError;
use crate::text::hex;

/// The widest layer accepted: far beyond what trains on MNIST, small enough to allocate.
pub const MAX_WIDTH: usize = MAX_IMAGE_PIXELS;
/// The most parameters accepted (about 1 GB of f64 weights).
pub const MAX_PARAMS: usize = 128_000_000;
/// The largest single tensor, in bytes: SQLite stores a value of at most 1 000 000 000 bytes.
pub const MAX_TENSOR_BYTES: usize = 1_000_000_000;
/// The most epochs accepted: about two years of full-MNIST epochs at a second each.
pub const MAX_EPOCHS: usize = 100_000;
/// The longest warmup accepted, in steps.
pub const MAX_WARMUP_STEPS: usize = 1_000_000_000;
/// The longest `data.dir` accepted (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// `[data]`: where the samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Folder with the MNIST IDX files or the PNG layout, relative to the working directory.
    /// Default `"data/mnist"`, the copy shipped with the repository.
    #[serde(default = "default_data_dir")]
    pub dir: String,
    /// `"auto"` (default), `"idx"` or `"png"`.
    #[serde(default)]
    pub format: DataFormat,
    /// Train on the first N training samples only (file order). Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test samples only (file order). Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_test: Option<usize>,
    /// Hold out the last N of the (limited) training samples, in file order, for validation: never
    /// trained on, the same for every run of a spec whatever its seed. Each epoch is then evaluated on them
    /// too (`val_loss`, `val_acc`). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<usize>,
}

fn default_data_dir() -> String {
    "data/mnist".into()
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            dir: default_data_dir(),
            format: DataFormat::Auto,
            limit_train: None,
            limit_test: None,
            validation: None,
        }
    }
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }
}

/// Weight initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Normal, std sqrt(2 / fan_in); zero biases.
    #[default]
    He,
    /// Normal, std sqrt(2 / (fan_in + fan_out)) (Glorot); zero biases.
    Xavier,
    /// Standard normal weights and biases: the tutorial's init (saturates the softmax on MNIST).
    Normal,
}

impl Init {
    pub fn as_str(self) -> &'static str {
        match self {
            Init::He => "he",
            Init::Xavier => "xavier",
            Init::Normal => "normal",
        }
    }
}

/// Floating-point precision of weights and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F64,
}

impl Dtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    /// The dtype named `s` as stored (`f32`, `f64`).
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f32" => Some(Dtype::F32),
            "f64" => Some(Dtype::F64),
            _ => None,
        }
    }
}

/// `[model]`: the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Layer widths, input first, classes last. Default `[784, 512, 10]`.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<usize>,
    /// Default `"relu"`.
    #[serde(default)]
    pub activation: Activation,
    /// Default `"he"`.
    #[serde(default)]
    pub init: Init,
    /// Default `"f32"`.
    #[serde(default)]
    pub dtype: Dtype,
    /// Dropout of the hidden layers' activations while training: one rate for every hidden layer
    /// (`dropout = 0.2`) or one per hidden layer (`dropout = [0.2, 0.5]`), each in [0, 1). Default 0: none.
    #[serde(default, skip_serializing_if = "Dropout::is_none")]
    pub dropout: Dropout,
}

/// `model.dropout`: a rate for every hidden layer, or one per hidden layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dropout {
    Every(f64),
    PerLayer(Vec<f64>),
}

impl Default for Dropout {
    fn default() -> Self {
        Dropout::Every(0.0)
    }
}

impl Dropout {
    /// No dropout anywhere (what a config without the key means).
    pub fn is_none(&self) -> bool {
        match self {
            Dropout::Every(p) => *p == 0.0,
            Dropout::PerLayer(ps) => ps.iter().all(|p| *p == 0.0),
        }
    }

    /// The rates as stored in `runs.dropout` and shown by compare: `0`, `0.2`, `[0.2,0.5]`.
    pub fn describe(&self) -> String {
        match self {
            Dropout::Every(p) => format!("{p}"),
            Dropout::PerLayer(ps) => serde_json::Value::from(ps.clone()).to_string(),
        }
    }

    /// The rate of each of `hidden` hidden layers (a list of another length gives what it has; the
    /// config's validation refuses it).
    pub fn rates(&self, hidden: usize) -> Vec<f64> {
        match self {
            Dropout::Every(p) => vec![*p; hidden],
            Dropout::PerLayer(ps) => ps.clone(),
        }
    }
}

fn default_sizes() -> Vec<usize> {
    vec![784, 512, 10]
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            sizes: default_sizes(),
            activation: Activation::default(),
            init: Init::default(),
            dtype: Dtype::default(),
            dropout: Dropout::default(),
        }
    }
}

/// `[train]`: the optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Seeds the ChaCha streams for init and shuffling. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Samples per SGD step. Default 10 (the tutorial's).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// SGD step size lr in w -= (lr / n) * sum of per-sample gradients. Default 0.1.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Passes over the training set. Default 3.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Drop the last partial batch of each epoch, as the tutorial's loader does. Default true.
    #[serde(default = "default_true")]
    pub drop_last: bool,
    /// Early stopping (`core::early`): end the run after this many epochs in a row without an
    /// improvement of `monitor` by more than `min_delta`. Default 0: off. Needs `data.validation`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub patience: usize,
    /// The least change that counts as an improvement, >= 0. Default 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_delta: f64,
    /// The validation metric early stopping watches: `"val_acc"` (default) or `"val_loss"`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub monitor: Metric,
    /// End with the weights of the best epoch instead of the last one's. Default false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restore_best: bool,
}

fn default_batch_size() -> usize {
    10
}
fn default_learning_rate() -> f64 {
    0.1
}
fn default_epochs() -> usize {
    3
}
fn default_true() -> bool {
    true
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: default_batch_size(),
            learning_rate: default_learning_rate(),
            epochs: default_epochs(),
            drop_last: true,
            patience: 0,
            min_delta: 0.0,
            monitor: Metric::ValAcc,
            restore_best: false,
        }
    }
}

/// Which rule turns the batch's mean gradient into a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optionally with momentum (heavy-ball or Nesterov) and L2 decay.
    #[default]
    Sgd,
    /// Adam (Kingma and Ba, 2015), with L2 decay added to the gradient.
    Adam,
    /// Adam with decoupled weight decay (Loshchilov and Hutter, 2019).
    Adamw,
}

impl OptimizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }
}

/// How the learning rate changes with the step index (a linear warmup may precede any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr at every step.
    #[default]
    Constant,
    /// lr * gamma^floor(e / step_epochs), e the 0-based epoch of the step.
    Step,
    /// lr * gamma^e, e the 0-based epoch of the step.
    Exponential,
    /// From lr down to min_lr over the run: min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2, t the 0-based
    /// step, T the run's steps.
    Cosine,
}

impl Schedule {
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Step => "step",
            Schedule::Exponential => "exponential",
            Schedule::Cosine => "cosine",
        }
    }
}

/// `[optimizer]`: the update rule and the learning-rate schedule. Every default keeps plain SGD at a
/// constant rate, w -= (lr / n) * sum of per-sample gradients; a config that leaves a key at its default
/// hashes as if the key did not exist, so runs from before this section keep their hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `"sgd"` (default), `"adam"` or `"adamw"`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: OptimizerKind,
    /// SGD's momentum mu, in [0, 1): v = mu v + g. Default 0 (none).
    #[serde(default, skip_serializing_if = "is_default")]
    pub momentum: f64,
    /// SGD with momentum: step along g + mu v (Nesterov) instead of v. Default false.
    #[serde(default, skip_serializing_if = "is_default")]
    pub nesterov: bool,
    /// L2 decay lambda >= 0: g += lambda w (sgd, adam), or w -= lr lambda w before the step (adamw).
    /// Default 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub weight_decay: f64,
    /// Adam's decay of the first moment, in [0, 1). Default 0.9.
    #[serde(default = "default_beta1", skip_serializing_if = "is_default_beta1")]
    pub beta1: f64,
    /// Adam's decay of the second moment, in [0, 1). Default 0.999.
    #[serde(default = "default_beta2", skip_serializing_if = "is_default_beta2")]
    pub beta2: f64,
    /// Adam's epsilon, > 0. Default 1e-8.
    #[serde(default = "default_eps", skip_serializing_if = "is_default_eps")]
    pub eps: f64,
    /// `"constant"` (default), `"step"`, `"exponential"` or `"cosine"`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule: Schedule,
    /// `step`: epochs between decays, >= 1. Default 1.
    #[serde(default = "default_one", skip_serializing_if = "is_one")]
    pub step_epochs: usize,
    /// `step` and `exponential`: the factor per decay, in (0, 1]. Default 0.1.
    #[serde(default = "default_gamma", skip_serializing_if = "is_default_gamma")]
    pub gamma: f64,
    /// `cosine`: the rate it ends at, in [0, lr). Default 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_lr: f64,
    /// Steps of linear warmup before the schedule: the rate of step t < N is scaled by (t + 1) / N.
    /// Default 0 (none).
    #[serde(default, skip_serializing_if = "is_default")]
    pub warmup_steps: usize,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn default_beta1() -> f64 {
    0.9
}
fn is_default_beta1(v: &f64) -> bool {
    *v == default_beta1()
}
fn default_beta2() -> f64 {
    0.999
}
fn is_default_beta2(v: &f64) -> bool {
    *v == default_beta2()
}
fn default_eps() -> f64 {
    1e-8
}
fn is_default_eps(v: &f64) -> bool {
    *v == default_eps()
}
fn default_one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn default_gamma() -> f64 {
    0.1
}
fn is_default_gamma(v: &f64) -> bool {
    *v == default_gamma()
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            schedule: Schedule::Constant,
            step_epochs: 1,
            gamma: default_gamma(),
            min_lr: 0.0,
            warmup_steps: 0,
        }
    }
}

impl OptimizerSpec {
    /// Whether the update is today's plain SGD step, w = fma(-lr_t / n, sum of gradients, w) (whatever
    /// the schedule): no momentum, no decay, not Adam. Such steps carry no state.
    pub fn is_plain_sgd(&self) -> bool {
        self.kind == OptimizerKind::Sgd && self.momentum == 0.0 && self.weight_decay == 0.0
    }

    /// Every key as JSON, those at their defaults included (the config's own JSON leaves them out).
    pub fn to_full_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "schedule": self.schedule.as_str(),
            "step_epochs": self.step_epochs,
            "gamma": self.gamma,
            "min_lr": self.min_lr,
            "warmup_steps": self.warmup_steps,
        })
    }

    /// Whether the rule keeps state between steps (a velocity, or Adam's moments).
    pub fn is_stateful(&self) -> bool {
        self.kind != OptimizerKind::Sgd || self.momentum > 0.0
    }

    /// The section in one line, every key that is not at its default (the `runs.optimizer` column, what
    /// compare groups by): `sgd`, `sgd momentum=0.9 nesterov`, `adamw weight_decay=0.01 cosine(min_lr=0)
    /// warmup_steps=500`. Keys that the kind does not read are left out.
    pub fn describe(&self) -> String {
        let d = OptimizerSpec::default();
        let mut s = vec![self.kind.as_str().to_string()];
        let mut key = |name: &str, v: f64, default: f64| {
            if v != default {
                s.push(format!("{name}={v}"));
            }
        };
        match self.kind {
            OptimizerKind::Sgd => key("momentum", self.momentum, 0.0),
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                key("beta1", self.beta1, d.beta1);
                key("beta2", self.beta2, d.beta2);
                key("eps", self.eps, d.eps);
            }
        }
        key("weight_decay", self.weight_decay, 0.0);
        if self.nesterov {
            s.push("nesterov".into());
        }
        match self.schedule {
            Schedule::Constant => {}
            Schedule::Step => s.push(format!(
                "step(step_epochs={},gamma={})",
                self.step_epochs, self.gamma
            )),
            Schedule::Exponential => s.push(format!("exponential(gamma={})", self.gamma)),
            Schedule::Cosine => s.push(format!("cosine(min_lr={})", self.min_lr)),
        }
        if self.warmup_steps > 0 {
            s.push(format!("warmup_steps={}", self.warmup_steps));
        }
        s.join(" ")
    }
}

/// Everything one run depends on besides the data bytes: a run is a pure function of this and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub data: DataSpec,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub train: TrainSpec,
    /// Left out of the config's JSON (and so of its hash) when every key is at its default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub optimizer: OptimizerSpec,
}

/// The keys a sweep may vary, as dotted paths.
pub const SWEEPABLE: &[&str] = &[
    "data.dir",
    "data.format",
    "data.limit_train",
    "data.limit_test",
    "data.validation",
    "model.sizes",
    "model.activation",
    "model.init",
    "model.dtype",
    "model.dropout",
    "train.seed",
    "train.batch_size",
    "train.learning_rate",
    "train.epochs",
    "train.drop_last",
    "train.patience",
    "train.min_delta",
    "train.monitor",
    "train.restore_best",
    "optimizer.kind",
    "optimizer.momentum",
    "optimizer.nesterov",
    "optimizer.weight_decay",
    "optimizer.beta1",
    "optimizer.beta2",
    "optimizer.eps",
    "optimizer.schedule",
    "optimizer.step_epochs",
    "optimizer.gamma",
    "optimizer.min_lr",
    "optimizer.warmup_steps",
];

impl RunConfig {
    /// The config as JSON with every key present, those the config's own JSON leaves out at their
    /// defaults (the keys added after version 5, so that older configs keep their hashes) included: what
    /// a dotted key such as `optimizer.momentum` is looked up in.
    pub fn to_full_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("optimizer".into(), self.optimizer.to_full_json());
        }
        // The other keys left out at their defaults.
        let t = &self.train;
        let defaults = [
            (
                "model",
                "dropout",
                serde_json::to_value(&self.model.dropout),
            ),
            ("train", "patience", serde_json::to_value(t.patience)),
            ("train", "min_delta", serde_json::to_value(t.min_delta)),
            ("train", "monitor", serde_json::to_value(t.monitor)),
            (
                "train",
                "restore_best",
                serde_json::to_value(t.restore_best),
            ),
        ];
        for (section, key, value) in defaults {
            if let (Some(obj), Ok(value)) =
                (v.get_mut(section).and_then(|s| s.as_object_mut()), value)
            {
                obj.entry(key).or_insert(value);
            }
        }
        v
    }

    /// Check the values that types alone cannot; the error names the dotted key at fault and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, msg: String| Err(ConfigError { key, msg });
        let dir = &self.data.dir;
        if dir.trim().is_empty() {
            return err("data.dir", "must name a folder, e.g. \"data/mnist\"".into());
        }
        if dir.len() > MAX_PATH_LEN || dir.contains('\0') {
            return err(
                "data.dir",
                format!("must be a path of at most {MAX_PATH_LEN} bytes without NUL characters"),
            );
        }
        if self.data.limit_train == Some(0) {
            return err(
                "data.limit_train",
                "must be >= 1 (or left out for the whole training set)".into(),
            );
        }
        if self.data.validation == Some(0) {
            return err(
                "data.validation",
                "must be >= 1 (or left out for no validation split)".into(),
            );
        }
        if self.data.limit_test == Some(0) {
            return err(
                "data.limit_test",
                "must be >= 1 (or left out for the whole test set)".into(),
            );
        }
        let sizes = &self.model.sizes;
        if sizes.len() < 2 {
            return err(
                "model.sizes",
                format!(
                    "needs at least 2 entries (input and classes), e.g. [784, 512, 10]; got {sizes:?}"
                ),
            );
        }
        if sizes.contains(&0) {
            return err(
                "model.sizes",
                format!("every layer width must be >= 1; got {sizes:?}"),
            );
        }
        if let Some(w) = sizes.iter().find(|&&w| w > MAX_WIDTH) {
            return err(
                "model.sizes",
                format!("a layer width of {w} is more than this tool supports ({MAX_WIDTH})"),
            );
        }
        // Widths are at most MAX_WIDTH, so these products cannot overflow.
        let params: usize = sizes.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
        if params > MAX_PARAMS {
            return err(
                "model.sizes",
                format!(
                    "{params} parameters is more than this tool supports ({MAX_PARAMS}); use narrower layers"
                ),
            );
        }
        let value_bytes = self.model.dtype.size();
        if let Some((l, p)) = sizes
            .windows(2)
            .enumerate()
            .find(|(_, p)| p[0] * p[1] * value_bytes > MAX_TENSOR_BYTES)
        {
            return err(
                "model.sizes",
                format!(
                    "layer {}'s weight matrix [{}, {}] in {} takes {} bytes, more than the {MAX_TENSOR_BYTES} \
                     bytes the store can hold in one value; use narrower layers (or f32)",
                    l + 1,
                    p[1],
                    p[0],
                    self.model.dtype.as_str(),
                    p[0] * p[1] * value_bytes
                ),
            );
        }
        if sizes[sizes.len() - 1] != NUM_CLASSES {
            return err(
                "model.sizes",
                format!(
                    "the last entry is the class count and must be {NUM_CLASSES} for MNIST; got {sizes:?}"
                ),
            );
        }
        if self.train.seed > i64::MAX as u64 {
            return err(
                "train.seed",
                format!("must be at most {} (a TOML integer)", i64::MAX),
            );
        }
        if self.train.batch_size == 0 {
            return err("train.batch_size", "must be >= 1".into());
        }
        let lr = self.train.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return err(
                "train.learning_rate",
                format!("must be a finite number > 0; got {lr}"),
            );
        }
        if self.train.epochs == 0 || self.train.epochs > MAX_EPOCHS {
            return err(
                "train.epochs",
                format!("must be from 1 to {MAX_EPOCHS}; got {}", self.train.epochs),
            );
        }
        self.validate_dropout()?;
        self.validate_early_stopping()?;
        self.validate_optimizer()
    }

    /// `model.dropout`: rates in [0, 1), one per hidden layer when a list.
    fn validate_dropout(&self) -> Result<(), ConfigError> {
        let hidden = self.model.sizes.len().saturating_sub(2);
        let rates = self.model.dropout.rates(hidden);
        if let Dropout::PerLayer(ps) = &self.model.dropout
            && ps.len() != hidden
        {
            return Err(ConfigError {
                key: "model.dropout",
                msg: format!(
                    "a list gives one rate per hidden layer: model.sizes {:?} has {hidden}, the list {}",
                    self.model.sizes,
                    ps.len()
                ),
            });
        }
        if let Some(p) = rates
            .iter()
            .find(|p| !(p.is_finite() && (0.0..1.0).contains(*p)))
        {
            return Err(ConfigError {
                key: "model.dropout",
                msg: format!(
                    "a dropout rate is the share of a hidden layer's units dropped at each step, in [0, 1) \
                     (0 <= p < 1); got {p}"
                ),
            });
        }
        Ok(())
    }

    /// The `[train]` keys of early stopping: it watches a validation metric, so it needs a split.
    fn validate_early_stopping(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, msg: String| Err(ConfigError { key, msg });
        let t = &self.train;
        if t.patience > MAX_EPOCHS {
            return err(
                "train.patience",
                format!("must be from 0 (off) to {MAX_EPOCHS}; got {}", t.patience),
            );
        }
        if !(t.min_delta.is_finite() && t.min_delta >= 0.0) {
            return err(
                "train.min_delta",
                format!("must be a finite number >= 0; got {}", t.min_delta),
            );
        }
        if !t.monitor.needs_validation() {
            return err(
                "train.monitor",
                format!(
                    "early stopping watches the validation split: use \"val_acc\" or \"val_loss\" (stopping on \
                     {} would choose on the test set); got \"{}\"",
                    t.monitor.as_str(),
                    t.monitor.as_str()
                ),
            );
        }
        if t.patience > 0 && self.data.validation.unwrap_or(0) == 0 {
            return err(
                "train.patience",
                "early stopping watches a validation metric: hold training samples out with [data] \
                 validation = N (e.g. 10000), or remove patience"
                    .into(),
            );
        }
        Ok(())
    }

    /// The `[optimizer]` checks: each value in its range, and the keys that need another kind refused.
    fn validate_optimizer(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, msg: String| Err(ConfigError { key, msg });
        let o = &self.optimizer;
        let unit = |key: &'static str, v: f64, what: &str| {
            if v.is_finite() && (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                err(
                    key,
                    format!("{what} must be in [0, 1) (0 <= x < 1); got {v}"),
                )
            }
        };
        unit("optimizer.momentum", o.momentum, "the momentum")?;
        unit(
            "optimizer.beta1",
            o.beta1,
            "beta1 (the first moment's decay)",
        )?;
        unit(
            "optimizer.beta2",
            o.beta2,
            "beta2 (the second moment's decay)",
        )?;
        if o.kind != OptimizerKind::Sgd && o.momentum != 0.0 {
            return err(
                "optimizer.momentum",
                format!(
                    "momentum is SGD's; kind = \"{}\" keeps its own running mean of the gradient (beta1): \
                     remove momentum, or set kind = \"sgd\"",
                    o.kind.as_str()
                ),
            );
        }
        if o.nesterov && (o.kind != OptimizerKind::Sgd || o.momentum == 0.0) {
            return err(
                "optimizer.nesterov",
                "Nesterov momentum needs kind = \"sgd\" and a momentum > 0 (e.g. momentum = 0.9)"
                    .into(),
            );
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return err(
                "optimizer.weight_decay",
                format!("must be a finite number >= 0; got {}", o.weight_decay),
            );
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return err(
                "optimizer.eps",
                format!("must be a finite number > 0 (e.g. 1e-8); got {}", o.eps),
            );
        }
        if o.step_epochs == 0 || o.step_epochs > MAX_EPOCHS {
            return err(
                "optimizer.step_epochs",
                format!("must be from 1 to {MAX_EPOCHS}; got {}", o.step_epochs),
            );
        }
        if !(o.gamma.is_finite() && o.gamma > 0.0 && o.gamma <= 1.0) {
            return err(
                "optimizer.gamma",
                format!(
                    "must be in (0, 1] (the factor the rate is multiplied by); got {}",
                    o.gamma
                ),
            );
        }
        let lr = self.train.learning_rate;
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0) {
            return err(
                "optimizer.min_lr",
                format!("must be a finite number >= 0; got {}", o.min_lr),
            );
        }
        if o.schedule == Schedule::Cosine && o.min_lr >= lr {
            return err(
                "optimizer.min_lr",
                format!(
                    "the cosine schedule's floor {} must be below its start, train.learning_rate = {lr}",
                    o.min_lr
                ),
            );
        }
        if o.warmup_steps > MAX_WARMUP_STEPS {
            return err(
                "optimizer.warmup_steps",
                format!("must be at most {MAX_WARMUP_STEPS}; got {}", o.warmup_steps),
            );
        }
        Ok(())
    }

    /// Checks that need the data: the input width and the batch size against the (limited) training set.
    pub fn validate_against_data(
        &self,
        pixels: usize,
        n_train: usize,
        n_test: usize,
    ) -> Result<(), ConfigError> {
        let err = |key: &'static str, msg: String| Err(ConfigError { key, msg });
        if self.model.sizes[0] != pixels {
            return err(
                "model.sizes",
                format!(
                    "the first entry is the input size and must be {pixels} (the data's pixels per image); got {:?}",
                    self.model.sizes
                ),
            );
        }
        if let Some(l) = self.data.limit_train.filter(|&l| l > n_train) {
            return err(
                "data.limit_train",
                format!("{l} is more than the {n_train} training samples in the data"),
            );
        }
        if let Some(l) = self.data.limit_test.filter(|&l| l > n_test) {
            return err(
                "data.limit_test",
                format!("{l} is more than the {n_test} test samples in the data"),
            );
        }
        let total = self.data.limit_train.unwrap_or(n_train);
        let n = match self.data.validation {
            Some(v) if v >= total => {
                return err(
                    "data.validation",
                    format!(
                        "{v} held out of {total} training samples leaves none to train on; hold out fewer"
                    ),
                );
            }
            Some(v) => total - v,
            None => total,
        };
        if self.train.batch_size > n {
            let held = match self.data.validation {
                Some(v) => format!(", after {v} held out for validation"),
                None => String::new(),
            };
            return err(
                "train.batch_size",
                format!(
                    "{} is larger than the training set ({n} samples{held}); use at most {n}",
                    self.train.batch_size
                ),
            );
        }
        Ok(())
    }

    /// SHA-256 of the config's canonical JSON: the key by which a run is recognised as already done.
    pub fn hash(&self) -> String {
        // serde_json writes fields in declaration order and floats in shortest round-trip form. Plain
        // structs of numbers, strings and enums always serialise.
        let json = serde_json::to_string(self).expect("a RunConfig serialises to JSON");
        hex(&Sha256::digest(json.as_bytes()))
    }

    /// Hash of the config with the seed fixed: runs sharing it differ only by seed.
    pub fn seed_group(&self) -> String {
        let mut c = self.clone();
        c.train.seed = 0;
        c.hash()
    }

    /// The resolved config as TOML text, as stored with each run and read back by `verify`. Fails only for
    /// a config that [`RunConfig::validate`] refuses (a seed above i64::MAX).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError {
            key: "train.seed",
            msg: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Parse and validate a config stored by [`RunConfig::to_toml`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| ConfigError {
            key: "config",
            msg: e.message().trim().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_toml() {
        let mut c = RunConfig::default();
        c.data.limit_train = Some(100);
        c.train.learning_rate = 0.3;
        let back = RunConfig::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.hash(), c.hash());
    }

    #[test]
    fn data_checks_name_the_key() {
        let c = RunConfig::default();
        assert_eq!(
            c.validate_against_data(784, 5, 5).unwrap_err().key,
            "train.batch_size"
        );
        assert_eq!(
            c.validate_against_data(100, 60000, 10000).unwrap_err().key,
            "model.sizes"
        );
        assert!(c.validate_against_data(784, 60000, 10000).is_ok());
        let mut v = RunConfig::default();
        v.data.validation = Some(60000);
        assert_eq!(
            v.validate_against_data(784, 60000, 10000).unwrap_err().key,
            "data.validation"
        );
        v.data.validation = Some(59995);
        assert_eq!(
            v.validate_against_data(784, 60000, 10000).unwrap_err().key,
            "train.batch_size"
        );
        v.data.validation = Some(10000);
        assert!(v.validate_against_data(784, 60000, 10000).is_ok());
        // A config without a split hashes as before splits existed.
        assert_eq!(RunConfig::default().hash(), {
            let mut d = RunConfig::default();
            d.data.validation = None;
            d.hash()
        });
        assert!(
            !serde_json::to_string(&RunConfig::default())
                .unwrap()
                .contains("validation")
        );
    }

    #[test]
    fn names_as_stored_are_the_names_of_the_spec() {
        let serde_name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for a in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            assert_eq!(serde_name(serde_json::to_value(a).unwrap()), a.as_str());
        }
        for i in [Init::He, Init::Xavier, Init::Normal] {
            assert_eq!(serde_name(serde_json::to_value(i).unwrap()), i.as_str());
        }
        for d in [Dtype::F32, Dtype::F64] {
            assert_eq!(serde_name(serde_json::to_value(d).unwrap()), d.as_str());
            assert_eq!(Dtype::parse(d.as_str()), Some(d));
        }
        for f in [DataFormat::Auto, DataFormat::Idx, DataFormat::Png] {
            assert_eq!(serde_name(serde_json::to_value(f).unwrap()), f.as_str());
        }
    }

    #[test]
    fn limits_that_the_store_and_time_impose_are_checked() {
        let mut c = RunConfig::default();
        // 127.8 M parameters (under MAX_PARAMS) but one f64 tensor of 1.02 GB: more than SQLite holds.
        c.model.sizes = vec![784, 1, 11300, 11300, 10];
        c.model.dtype = Dtype::F64;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "model.sizes");
        assert!(e.msg.contains("layer 3's weight matrix"), "{}", e.msg);
        c.model.dtype = Dtype::F32;
        assert!(c.validate().is_ok());
        let mut c = RunConfig::default();
        c.train.epochs = 1_000_000_000_000;
        assert_eq!(c.validate().unwrap_err().key, "train.epochs");
        c.train.epochs = MAX_EPOCHS;
        assert!(c.validate().is_ok());
    }
}
