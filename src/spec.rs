//! The experiment spec: TOML types with documented defaults, validation into checked run configs, and the
//! expansion of `[sweep]` (grid or random) into named runs.
//!
//! Every error names the file, the line and the key, and says what is allowed. Only configs that passed
//! [`RunConfig::validate`] reach training.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{DataFormat, NUM_CLASSES};
use crate::error::SpecError;
use crate::rng::{Stream, StreamRng};

/// More runs than this from one spec is almost certainly a typo in a sweep list.
pub const MAX_RUNS: usize = 10_000;
/// The widest layer accepted: far beyond what trains on MNIST, small enough to allocate.
pub const MAX_WIDTH: usize = 100_000;
/// The most parameters accepted (about 1 GB of f64 weights).
pub const MAX_PARAMS: usize = 128_000_000;

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
        }
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
}

/// The keys a sweep may vary, as dotted paths.
pub const SWEEPABLE: &[&str] = &[
    "data.dir",
    "data.format",
    "data.limit_train",
    "data.limit_test",
    "model.sizes",
    "model.activation",
    "model.init",
    "model.dtype",
    "train.seed",
    "train.batch_size",
    "train.learning_rate",
    "train.epochs",
    "train.drop_last",
];

impl RunConfig {
    /// Check the values that types alone cannot: returns the dotted key at fault and what is allowed.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.data.dir.trim().is_empty() {
            return Err(("data.dir", "must name a folder, e.g. \"data/mnist\"".into()));
        }
        if self.data.limit_train == Some(0) {
            return Err((
                "data.limit_train",
                "must be >= 1 (or left out for the whole training set)".into(),
            ));
        }
        if self.data.limit_test == Some(0) {
            return Err((
                "data.limit_test",
                "must be >= 1 (or left out for the whole test set)".into(),
            ));
        }
        let sizes = &self.model.sizes;
        if sizes.len() < 2 {
            return Err((
                "model.sizes",
                format!(
                    "needs at least 2 entries (input and classes), e.g. [784, 512, 10]; got {sizes:?}"
                ),
            ));
        }
        if sizes.contains(&0) {
            return Err((
                "model.sizes",
                format!("every layer width must be >= 1; got {sizes:?}"),
            ));
        }
        if let Some(w) = sizes.iter().find(|&&w| w > MAX_WIDTH) {
            return Err((
                "model.sizes",
                format!("a layer width of {w} is more than this tool supports ({MAX_WIDTH})"),
            ));
        }
        let params: usize = sizes.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
        if params > MAX_PARAMS {
            return Err((
                "model.sizes",
                format!(
                    "{params} parameters is more than this tool supports ({MAX_PARAMS}); use narrower layers"
                ),
            ));
        }
        if sizes[sizes.len() - 1] != NUM_CLASSES {
            return Err((
                "model.sizes",
                format!(
                    "the last entry is the class count and must be {NUM_CLASSES} for MNIST; got {sizes:?}"
                ),
            ));
        }
        if self.train.batch_size == 0 {
            return Err(("train.batch_size", "must be >= 1".into()));
        }
        let lr = self.train.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return Err((
                "train.learning_rate",
                format!("must be a finite number > 0; got {lr}"),
            ));
        }
        if self.train.epochs == 0 {
            return Err(("train.epochs", "must be >= 1".into()));
        }
        Ok(())
    }

    /// Checks that need the data: the input width and the batch size against the (limited) training set.
    pub fn validate_against_data(
        &self,
        pixels: usize,
        n_train: usize,
        n_test: usize,
    ) -> Result<(), (&'static str, String)> {
        if self.model.sizes[0] != pixels {
            return Err((
                "model.sizes",
                format!(
                    "the first entry is the input size and must be {pixels} (the data's pixels per image); got {:?}",
                    self.model.sizes
                ),
            ));
        }
        if let Some(l) = self.data.limit_train.filter(|&l| l > n_train) {
            return Err((
                "data.limit_train",
                format!("{l} is more than the {n_train} training samples in the data"),
            ));
        }
        if let Some(l) = self.data.limit_test.filter(|&l| l > n_test) {
            return Err((
                "data.limit_test",
                format!("{l} is more than the {n_test} test samples in the data"),
            ));
        }
        let n = self.data.limit_train.unwrap_or(n_train);
        if self.train.batch_size > n {
            return Err((
                "train.batch_size",
                format!(
                    "{} is larger than the training set ({n} samples); use at most {n}",
                    self.train.batch_size
                ),
            ));
        }
        Ok(())
    }

    /// SHA-256 of the config's canonical JSON: the key by which a run is recognised as already done.
    pub fn hash(&self) -> String {
        // serde_json writes fields in declaration order and floats in shortest round-trip form.
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::data::hex(&Sha256::digest(json.as_bytes()))
    }

    /// The resolved config as TOML text, as stored with each run and read back by `verify`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Parse a config stored by [`RunConfig::to_toml`].
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(cfg)
    }
}

/// The file as written, before the sweep is expanded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    data: DataSpec,
    #[serde(default)]
    model: ModelSpec,
    #[serde(default)]
    train: TrainSpec,
    sweep: Option<toml::Table>,
}

/// One point of a sweep: its readable name, the values it sets, and the resolved config.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub name: String,
    /// (dotted key, value) pairs set by the sweep for this run, in key order.
    pub overrides: Vec<(String, toml::Value)>,
    pub config: RunConfig,
}

/// A parsed, validated spec: the experiment and its runs.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    /// The spec file path as given.
    pub path: String,
    /// The spec file's text, stored with the experiment.
    pub text: String,
    pub runs: Vec<PlannedRun>,
}

/// Read and expand a spec file.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: file.clone(),
        line: None,
        key: None,
        msg: format!("cannot read the spec: {e}"),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    parse(&text, &file, &stem)
}

/// Parse and expand spec text. `file` names it in errors; `default_name` is used when it has no `name`.
pub fn parse(text: &str, file: &str, default_name: &str) -> Result<Experiment, SpecError> {
    let err = |line: Option<usize>, key: Option<&str>, msg: String| SpecError {
        file: file.to_string(),
        line,
        key: key.map(str::to_string),
        msg,
    };
    let spec: SpecFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(line, None, with_suggestion(e.message().trim()))
    })?;
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    if name.trim().is_empty() {
        return Err(err(
            locate(text, None, "name"),
            Some("name"),
            "must not be empty".into(),
        ));
    }
    let base = RunConfig {
        data: spec.data,
        model: spec.model,
        train: spec.train,
    };
    base.validate().map_err(|(key, msg)| {
        let (section, k) = key.split_once('.').unwrap_or(("", key));
        err(locate(text, Some(section), k), Some(key), msg)
    })?;

    let sweep = spec.sweep.unwrap_or_default();
    let points = expand_sweep(&sweep, base.train.seed).map_err(|(key, msg)| {
        let line = key
            .as_deref()
            .and_then(|k| locate(text, Some("sweep"), k))
            .or_else(|| locate_table(text, "sweep"));
        err(line, key.map(|k| format!("sweep.{k}")).as_deref(), msg)
    })?;

    let base_value = toml::Value::try_from(&base).map_err(|e| err(None, None, e.to_string()))?;
    let mut runs = Vec::with_capacity(points.len());
    for (label, overrides) in points {
        let mut value = base_value.clone();
        for (key, v) in &overrides {
            set_path(&mut value, key, v.clone());
        }
        let config: RunConfig = value.try_into().map_err(|e: toml::de::Error| {
            let key = overrides.first().map(|(k, _)| k.as_str());
            let shown: Vec<String> = overrides
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            err(
                key.and_then(|k| locate(text, Some("sweep"), k)),
                None,
                format!(
                    "the sweep point {{{}}} is not a valid config: {}",
                    shown.join(", "),
                    e.message().trim()
                ),
            )
        })?;
        config.validate().map_err(|(key, msg)| {
            let v = overrides
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_string());
            let line = locate_key(text, key);
            let msg = match v {
                Some(v) => format!("sweep value {v}: {msg}"),
                None => msg,
            };
            err(line, Some(key), msg)
        })?;
        let run_name = if label.is_empty() {
            name.clone()
        } else {
            format!("{name}/{label}")
        };
        runs.push(PlannedRun {
            name: run_name,
            overrides,
            config,
        });
    }
    Ok(Experiment {
        name,
        description: spec.description.unwrap_or_default(),
        path: file.to_string(),
        text: text.to_string(),
        runs,
    })
}

type SweepError = (Option<String>, String);

/// (dotted key, value) pairs set by one sweep point.
type Overrides = Vec<(String, toml::Value)>;

/// Expand `[sweep]` into (label, overrides) pairs. A spec without a sweep has one point with no overrides.
fn expand_sweep(
    sweep: &toml::Table,
    base_seed: u64,
) -> Result<Vec<(String, Overrides)>, SweepError> {
    let method = match sweep.get("method") {
        None => "grid",
        Some(toml::Value::String(s)) if s == "grid" || s == "random" => s.as_str(),
        Some(other) => {
            return Err((
                Some("method".into()),
                format!("must be \"grid\" (default) or \"random\"; got {other}"),
            ));
        }
    };
    let mut axes: BTreeMap<&str, &toml::Value> = BTreeMap::new();
    for (key, value) in sweep {
        if matches!(key.as_str(), "method" | "trials" | "seed") {
            continue;
        }
        if !SWEEPABLE.contains(&key.as_str()) {
            let hint = nearest(key, SWEEPABLE)
                .map(|s| format!("did you mean \"{s}\"? "))
                .unwrap_or_default();
            return Err((
                Some(key.clone()),
                format!(
                    "unknown sweep key; {hint}sweep keys are dotted paths, one of: {}",
                    SWEEPABLE.join(", ")
                ),
            ));
        }
        axes.insert(key, value);
    }
    if method == "grid" {
        for k in ["trials", "seed"] {
            if sweep.contains_key(k) {
                return Err((Some(k.into()), "only applies to method = \"random\"".into()));
            }
        }
        let mut points: Vec<(String, Overrides)> = vec![(String::new(), Vec::new())];
        for (key, value) in &axes {
            let list = match value {
                toml::Value::Array(a) if !a.is_empty() => a,
                toml::Value::Array(_) => {
                    return Err((
                        Some(key.to_string()),
                        "empty list: a sweep list needs at least one value".into(),
                    ));
                }
                _ => {
                    return Err((
                        Some(key.to_string()),
                        format!("a grid sweep takes a list of values, e.g. \"{key}\" = [{value}]"),
                    ));
                }
            };
            let mut next = Vec::with_capacity(points.len() * list.len());
            for (label, overrides) in &points {
                for v in list {
                    let mut o = overrides.clone();
                    o.push((key.to_string(), v.clone()));
                    next.push((join_label(label, key, v), o));
                }
            }
            points = next;
            if points.len() > MAX_RUNS {
                return Err((
                    None,
                    format!("the sweep expands to more than {MAX_RUNS} runs; shorten its lists"),
                ));
            }
        }
        return Ok(points);
    }

    // Random search: `trials` points, each key drawn from its distribution, in key order.
    let trials = match sweep.get("trials") {
        Some(toml::Value::Integer(n)) if *n >= 1 && (*n as usize) <= MAX_RUNS => *n as usize,
        Some(v) => {
            return Err((
                Some("trials".into()),
                format!("must be an integer from 1 to {MAX_RUNS}; got {v}"),
            ));
        }
        None => {
            return Err((
                Some("method".into()),
                "a random sweep needs `trials = N` (N >= 1)".into(),
            ));
        }
    };
    let seed = match sweep.get("seed") {
        None => base_seed,
        Some(toml::Value::Integer(n)) if *n >= 0 => *n as u64,
        Some(v) => {
            return Err((
                Some("seed".into()),
                format!("must be an integer >= 0; got {v}"),
            ));
        }
    };
    let dists: Vec<(&str, Distribution)> = axes
        .iter()
        .map(|(k, v)| Ok((*k, Distribution::parse(k, v)?)))
        .collect::<Result<_, SweepError>>()?;
    if dists.is_empty() {
        return Err((None, "a random sweep needs at least one key to vary".into()));
    }
    let mut rng = StreamRng::new(seed, Stream::Sweep);
    let width = trials.to_string().len();
    Ok((0..trials)
        .map(|t| {
            let mut label = format!("trial={t:0width$}");
            let mut overrides = Vec::new();
            for (key, dist) in &dists {
                let v = dist.sample(&mut rng);
                label = join_label(&label, key, &v);
                overrides.push((key.to_string(), v));
            }
            (label, overrides)
        })
        .collect())
}

/// A random-sweep distribution: `{ uniform = [lo, hi] }`, `{ log_uniform = [lo, hi] }`,
/// `{ int_uniform = [lo, hi] }` (inclusive), `{ choice = [...] }`, or a plain list (a choice).
#[derive(Debug, Clone)]
enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    IntUniform(i64, i64),
    Choice(Vec<toml::Value>),
}

impl Distribution {
    fn parse(key: &str, v: &toml::Value) -> Result<Self, SweepError> {
        let bad = |msg: String| (Some(key.to_string()), msg);
        let usage = "a random sweep takes { uniform = [lo, hi] }, { log_uniform = [lo, hi] }, \
                     { int_uniform = [lo, hi] }, { choice = [...] } or a list of choices";
        let pair = |a: &toml::Value| -> Result<(f64, f64), SweepError> {
            let nums: Vec<f64> = a
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_float().or_else(|| x.as_integer().map(|i| i as f64)))
                        .collect()
                })
                .unwrap_or_default();
            match nums.as_slice() {
                [lo, hi] if lo.is_finite() && hi.is_finite() && lo <= hi => Ok((*lo, *hi)),
                _ => Err(bad(format!(
                    "range must be [lo, hi] with finite lo <= hi; got {a}"
                ))),
            }
        };
        match v {
            toml::Value::Array(a) if !a.is_empty() => Ok(Distribution::Choice(a.clone())),
            toml::Value::Array(_) => Err(bad(
                "empty list: a sweep list needs at least one value".into()
            )),
            toml::Value::Table(t) if t.len() == 1 => {
                let (kind, arg) = t
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .ok_or_else(|| bad(usage.into()))?;
                match kind {
                    "uniform" => pair(arg).map(|(a, b)| Distribution::Uniform(a, b)),
                    "log_uniform" => {
                        let (a, b) = pair(arg)?;
                        if a <= 0.0 {
                            return Err(bad(format!("log_uniform needs lo > 0; got {arg}")));
                        }
                        Ok(Distribution::LogUniform(a, b))
                    }
                    "int_uniform" => match arg.as_array().map(|a| a.as_slice()) {
                        Some([toml::Value::Integer(lo), toml::Value::Integer(hi)]) if lo <= hi => {
                            Ok(Distribution::IntUniform(*lo, *hi))
                        }
                        _ => Err(bad(format!(
                            "int_uniform takes [lo, hi], integers with lo <= hi; got {arg}"
                        ))),
                    },
                    "choice" => match arg {
                        toml::Value::Array(a) if !a.is_empty() => {
                            Ok(Distribution::Choice(a.clone()))
                        }
                        _ => Err(bad(format!("choice takes a non-empty list; got {arg}"))),
                    },
                    other => Err(bad(format!("unknown distribution `{other}`; {usage}"))),
                }
            }
            _ => Err(bad(usage.into())),
        }
    }

    fn sample(&self, rng: &mut StreamRng) -> toml::Value {
        match self {
            Distribution::Uniform(a, b) => toml::Value::Float(a + (b - a) * rng.uniform()),
            Distribution::LogUniform(a, b) => {
                toml::Value::Float((a.ln() + (b.ln() - a.ln()) * rng.uniform()).exp())
            }
            Distribution::IntUniform(a, b) => {
                toml::Value::Integer(a + rng.below((b - a) as u64 + 1) as i64)
            }
            Distribution::Choice(c) => c[rng.below(c.len() as u64) as usize].clone(),
        }
    }
}

/// Extend a run label with `key=value` using the key's last segment and a compact rendering of the value.
fn join_label(label: &str, key: &str, v: &toml::Value) -> String {
    let short = key.rsplit('.').next().unwrap_or(key);
    let value = render_value(v);
    if label.is_empty() {
        format!("{short}={value}")
    } else {
        format!("{label},{short}={value}")
    }
}

fn render_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => {
            // Shortest form that round-trips; random draws (17 digits) get four significant ones.
            let (plain, exp) = (format!("{f}"), format!("{f:e}"));
            let s = if plain.len() <= exp.len() { plain } else { exp };
            if s.len() <= 10 {
                s
            } else if (1e-4..1e4).contains(&f.abs()) {
                // Four significant digits, written plainly: 0.1243, 0.001243, 12.43.
                let decimals = (3 - f.abs().log10().floor() as i32).clamp(0, 10) as usize;
                format!("{f:.decimals$}")
            } else {
                format!("{f:.3e}")
            }
        }
        toml::Value::Array(a) => a.iter().map(render_value).collect::<Vec<_>>().join("-"),
        other => other.to_string(),
    }
}

/// Set `section.key` in a table value, creating the section if needed.
fn set_path(root: &mut toml::Value, dotted: &str, v: toml::Value) {
    let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
    if let toml::Value::Table(t) = root {
        let entry = t
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(s) = entry {
            s.insert(key.to_string(), v);
        }
    }
}

/// The line that sets a dotted key (`train.batch_size`): its `[sweep]` entry if it has one, else its
/// assignment in its section.
pub fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
    locate(text, Some("sweep"), dotted).or_else(|| locate(text, Some(section), key))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of a table header `[name]`.
fn locate_table(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| table_header(l).as_deref() == Some(name))
        .map(|i| i + 1)
}

fn table_header(line: &str) -> Option<String> {
    let t = line.split('#').next().unwrap_or("").trim();
    t.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(|inner| inner.trim().trim_matches('"').to_string())
}

/// The line where `key` is assigned inside `[section]` (`None`: at the top level). Matches bare and quoted keys.
fn locate(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = table_header(line) {
            current = Some(h);
            continue;
        }
        let in_section = match section {
            None | Some("") => current.is_none(),
            Some(s) => current.as_deref() == Some(s),
        };
        let lhs = line.split('=').next().unwrap_or("").trim();
        let lhs = lhs.trim_matches('"').trim_matches('\'');
        if line.contains('=') && lhs == key && in_section {
            return Some(i + 1);
        }
        // `train.batch_size = 1` written with a dotted key at the top level.
        if let Some(s) = section
            && current.is_none()
            && lhs == format!("{s}.{key}")
        {
            return Some(i + 1);
        }
    }
    None
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Add "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" and "unknown variant" messages.
fn with_suggestion(msg: &str) -> String {
    let Some(rest) = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("unknown variant `"))
    else {
        return msg.to_string();
    };
    let Some((word, tail)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let options: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    match nearest(word, &options) {
        Some(s) => format!("{msg}; did you mean `{s}`?"),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Experiment {
        parse(text, "t.toml", "t").unwrap()
    }

    fn parse_err(text: &str) -> SpecError {
        parse(text, "t.toml", "t").unwrap_err()
    }

    #[test]
    fn defaults_give_one_run() {
        let e = parse_ok("");
        assert_eq!(e.name, "t");
        assert_eq!(e.runs.len(), 1);
        assert_eq!(e.runs[0].name, "t");
        assert_eq!(e.runs[0].config, RunConfig::default());
    }

    #[test]
    fn grid_is_the_cartesian_product_with_stable_names() {
        let e = parse_ok(
            "name = \"g\"\n[sweep]\n\"train.learning_rate\" = [1.0, 0.1]\n\"train.seed\" = [1, 2, 3]\n\
             \"model.sizes\" = [[784, 10], [784, 32, 10]]\n",
        );
        assert_eq!(e.runs.len(), 12);
        assert_eq!(e.runs[0].name, "g/sizes=784-10,learning_rate=1,seed=1");
        assert_eq!(e.runs[11].config.model.sizes, vec![784, 32, 10]);
        assert_eq!(e.runs[11].config.train.seed, 3);
        let hashes: std::collections::HashSet<_> = e.runs.iter().map(|r| r.config.hash()).collect();
        assert_eq!(hashes.len(), 12);
    }

    #[test]
    fn unknown_keys_name_line_and_suggest() {
        let e = parse_err("[train]\nseed = 1\nlerning_rate = 0.1\n");
        assert_eq!(e.line, Some(3));
        assert!(e.msg.contains("unknown field `lerning_rate`"), "{}", e.msg);
        assert!(e.msg.contains("did you mean `learning_rate`?"), "{}", e.msg);
        let e = parse_err("[sweep]\n\"train.lr\" = [1.0]\n");
        assert_eq!(e.line, Some(2));
        assert!(e.msg.contains("unknown sweep key"), "{}", e.msg);
    }

    #[test]
    fn wrong_types_and_impossible_values_are_located() {
        let e = parse_err("[train]\nbatch_size = \"ten\"\n");
        assert_eq!(e.line, Some(2));
        assert!(e.msg.contains("invalid type"), "{}", e.msg);
        for (text, key, line) in [
            ("[train]\nlearning_rate = 0.0\n", "train.learning_rate", 2),
            ("[train]\nlearning_rate = nan\n", "train.learning_rate", 2),
            ("[train]\n\nbatch_size = 0\n", "train.batch_size", 3),
            ("[train]\nepochs = 0\n", "train.epochs", 2),
            ("[model]\nsizes = [784, 12]\n", "model.sizes", 2),
            ("[model]\nsizes = [784]\n", "model.sizes", 2),
        ] {
            let e = parse_err(text);
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(line)),
                "{text}: {e}"
            );
        }
        let e = parse_err("[model]\nactivation = \"relu6\"\n");
        assert!(e.msg.contains("did you mean `relu`?"), "{}", e.msg);
    }

    #[test]
    fn bad_sweeps_are_located() {
        let e = parse_err("[sweep]\n\"train.seed\" = []\n");
        assert_eq!(e.line, Some(2));
        assert!(e.msg.contains("empty list"));
        let e = parse_err("[sweep]\n\"train.batch_size\" = [10, 0]\n");
        assert_eq!(e.line, Some(2));
        assert!(e.msg.contains("sweep value 0"), "{}", e.msg);
        let e = parse_err("[sweep]\n\"train.epochs\" = [1.5]\n");
        assert!(e.msg.contains("not a valid config"), "{}", e.msg);
        let e = parse_err("[sweep]\n\"train.seed\" = 3\n");
        assert!(e.msg.contains("takes a list"), "{}", e.msg);
    }

    #[test]
    fn random_sweep_is_reproducible_and_in_range() {
        let text = "[sweep]\nmethod = \"random\"\ntrials = 20\nseed = 5\n\
                    \"train.learning_rate\" = { log_uniform = [0.01, 1.0] }\n\
                    \"train.batch_size\" = { choice = [10, 32] }\n\"train.epochs\" = { int_uniform = [1, 3] }\n";
        let a = parse_ok(text);
        let b = parse_ok(text);
        assert_eq!(a.runs.len(), 20);
        for (x, y) in a.runs.iter().zip(&b.runs) {
            assert_eq!(x.config, y.config);
            assert_eq!(x.name, y.name);
            let c = &x.config.train;
            assert!((0.01..=1.0).contains(&c.learning_rate));
            assert!([10, 32].contains(&c.batch_size));
            assert!((1..=3).contains(&c.epochs));
        }
        let other = parse_ok(&text.replace("seed = 5", "seed = 6"));
        assert_ne!(a.runs[0].config, other.runs[0].config);
        assert!(
            parse_err("[sweep]\nmethod = \"random\"\n\"train.seed\" = [1]\n")
                .msg
                .contains("trials")
        );
    }

    #[test]
    fn config_round_trips_through_toml() {
        let e = parse_ok("[data]\nlimit_train = 100\n[train]\nlearning_rate = 0.3\n");
        let c = &e.runs[0].config;
        let back = RunConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(&back, c);
        assert_eq!(back.hash(), c.hash());
    }

    #[test]
    fn data_checks_name_the_key() {
        let c = RunConfig::default();
        assert_eq!(
            c.validate_against_data(784, 5, 5).unwrap_err().0,
            "train.batch_size"
        );
        assert_eq!(
            c.validate_against_data(100, 60000, 10000).unwrap_err().0,
            "model.sizes"
        );
        assert!(c.validate_against_data(784, 60000, 10000).is_ok());
    }
}
