//! The experiment spec: the TOML file as written (`name`, `description`, `[data]`, `[model]`, `[train]`,
//! `[sweep]`), parsed with unknown keys refused, validated into checked [`RunConfig`]s and expanded into
//! named runs ([`super::expand`]).
//!
//! Every error names the file, the line and the key, and says what is allowed. Only configs that passed
//! [`RunConfig::validate`] reach training.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::expand::{SearchKeys, SweepError, expand_sweep, set_path};
use crate::core::config::{DataSpec, ModelSpec, OptimizerSpec, RunConfig, TrainSpec};
use crate::core::search::{Method, Metric, Plan, halving_rungs, hyperband_brackets};
use crate::error::SpecError;
use crate::text::nearest;

/// The largest spec file read: a spec is a page of TOML.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;
/// The longest experiment name accepted (a run's name adds the values it sets).
pub const MAX_NAME_CHARS: usize = 200;
/// The longest description accepted.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

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
    #[serde(default)]
    optimizer: OptimizerSpec,
    sweep: Option<toml::Table>,
    #[serde(default)]
    store: StoreSpec,
}

/// `[store]`: what the results store keeps of each run beyond what every run stores. Not part of a run's
/// config: it changes no bit a run computes.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSpec {
    /// Store each run's initial weights. Default false: they are a pure function of the seed, sizes, init
    /// and dtype, so only their hash is stored and they are drawn again (and checked against it) when
    /// `export --weights initial`, `diff` or `verify` need them.
    #[serde(default)]
    initial_weights: bool,
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
    /// Store the runs' initial weights (`[store] initial_weights`), not only their hash.
    pub keep_initial: bool,
    /// An adaptive search over the runs (`[sweep] method = "halving"` or `"hyperband"`).
    pub search: Option<Plan>,
    /// How the experiment's best configuration is chosen: `[sweep] metric` (a search ranks by it too);
    /// by default `val_acc` when every run holds a validation split out, otherwise `test_acc`.
    pub metric: Metric,
}

impl Experiment {
    /// An experiment of one run with this config (for library use: no spec file). The config is
    /// validated as a spec's would be.
    pub fn single(name: &str, config: RunConfig) -> Result<Experiment, SpecError> {
        let text = config.to_toml().map_err(|e| SpecError {
            file: "(config)".into(),
            line: None,
            key: Some(e.key.into()),
            msg: e.msg,
        })?;
        let exp = parse(&text, "(config)", name)?;
        Ok(exp)
    }
}

/// Read and expand a spec file.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let fail = |msg: String| SpecError {
        file: file.clone(),
        line: None,
        key: None,
        msg,
    };
    // Read at most one byte past the limit: `/dev/zero` or a huge file is refused, not read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read the spec: {e}")))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(fail(format!(
            "larger than {MAX_SPEC_BYTES} bytes; a spec is a short TOML file (is this the right file?)"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not UTF-8 text (byte {}): a spec is a TOML file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    parse(&text, &file, &stem)
}

/// The dotted key a `key = value` on 1-based `line` sets (`optimizer.kind`), its section taken from the
/// last `[section]` header above it; `None` for a line that sets no plain key.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let key = here.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
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
        // `epochs = ` with nothing after it: TOML's own message ("string values must be quoted") is about
        // a value that is not there.
        let empty = line
            .and_then(|l| text.lines().nth(l - 1))
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .and_then(|l| l.strip_suffix('=').map(str::trim));
        if let Some(key) = empty.filter(|k| !k.is_empty()) {
            return err(
                line,
                None,
                format!(
                    "`{key} =` has no value: give one (e.g. `{key} = 3`), or remove the line to take the \
                     default"
                ),
            );
        }
        let key = line.and_then(|l| key_at_line(text, l));
        err(line, key.as_deref(), with_suggestion(e.message().trim()))
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
    let name_chars = name.chars().count();
    if name_chars > MAX_NAME_CHARS || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(err(
            locate(text, None, "name"),
            Some("name"),
            format!(
                "must be at most {MAX_NAME_CHARS} characters, without control characters or `/` (it names \
                 the experiment's runs: `<name>/<values>`); got {name_chars} characters"
            ),
        ));
    }
    let description = spec.description.clone().unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(err(
            locate(text, None, "description"),
            Some("description"),
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    let base = RunConfig {
        data: spec.data,
        model: spec.model,
        train: spec.train,
        optimizer: spec.optimizer,
    };
    base.validate().map_err(|e| {
        let (section, k) = e.key.split_once('.').unwrap_or(("", e.key));
        err(locate(text, Some(section), k), Some(e.key), e.msg)
    })?;

    let sweep = spec.sweep.unwrap_or_default();
    let expansion = expand_sweep(&sweep, base.train.seed, base.train.epochs).map_err(
        |SweepError(key, msg)| {
            let line = key
                .as_deref()
                .and_then(|k| locate(text, Some("sweep"), k))
                .or_else(|| locate_table(text, "sweep"));
            err(line, key.map(|k| format!("sweep.{k}")).as_deref(), msg)
        },
    )?;
    let points = expansion.points;

    let base_value = toml::Value::try_from(&base).map_err(|e| err(None, None, e.to_string()))?;
    // Early stopping watches the experiment's selection metric unless [train] monitor names one.
    let monitor_named = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("train")?.get("monitor").cloned())
        .is_some();
    let inherited = expansion
        .metric
        .filter(|m| m.needs_validation() && !monitor_named);
    let mut runs = Vec::with_capacity(points.len());
    let mut point_hashes = Vec::with_capacity(points.len());
    for (label, overrides) in points {
        let mut value = base_value.clone();
        for (key, v) in &overrides {
            set_path(&mut value, key, v.clone());
        }
        if let Some(m) = inherited
            && !overrides.iter().any(|(k, _)| k == "train.monitor")
            && value
                .get("train")
                .and_then(|t| t.get("patience"))
                .and_then(toml::Value::as_integer)
                .is_some_and(|p| p > 0)
        {
            set_path(
                &mut value,
                "train.monitor",
                toml::Value::String(m.as_str().into()),
            );
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
        config.validate().map_err(|e| {
            let v = overrides
                .iter()
                .find(|(k, _)| k == e.key)
                .map(|(_, v)| crate::text::truncate(&v.to_string(), 80).into_owned());
            let line = locate_key(text, e.key);
            let msg = match v {
                Some(v) => format!("sweep value {v}: {}", e.msg),
                None => e.msg,
            };
            err(line, Some(e.key), msg)
        })?;
        let run_name = if label.is_empty() {
            name.clone()
        } else {
            format!("{name}/{label}")
        };
        point_hashes.push(config.hash());
        runs.push(PlannedRun {
            name: run_name,
            overrides,
            config,
        });
    }
    // Two points of a sweep with the same config are one run. In a grid that is a repeated value: an
    // error. Random draws may repeat a point: the repeat is the same run, kept once (in a search, a
    // candidate of two brackets is one run in both).
    let drawn = sweep.contains_key("trials")
        || matches!(sweep.get("method"), Some(toml::Value::String(m)) if m == "random" || m == "hyperband");
    if drawn {
        let mut first = std::collections::HashSet::new();
        runs.retain(|r| first.insert(r.config.hash()));
    }
    // The selection metric: the one named, or validation accuracy where every run has a validation split.
    let all_validated = runs.iter().all(|r| r.config.data.validation.is_some());
    let metric = expansion.metric.unwrap_or(if all_validated {
        Metric::ValAcc
    } else {
        Metric::TestAcc
    });
    if metric.needs_validation()
        && let Some(r) = runs.iter().find(|r| r.config.data.validation.is_none())
    {
        return Err(err(
            locate(text, Some("sweep"), "metric").or_else(|| locate_table(text, "sweep")),
            Some("sweep.metric"),
            format!(
                "{} is measured on a validation split, and run `{}` has none: set [data] validation = N \
                 (e.g. 10000: the last N training samples are held out), or select by metric = \"{}\"",
                metric.as_str(),
                crate::text::clean(&r.name),
                if metric.higher_is_better() {
                    "test_acc"
                } else {
                    "test_loss"
                }
            ),
        ));
    }
    if expansion.search.is_some()
        && let Some(r) = runs.iter().find(|r| r.config.train.patience > 0)
    {
        return Err(err(
            locate_key(text, "train.patience").or_else(|| locate_table(text, "sweep")),
            Some("train.patience"),
            format!(
                "an adaptive search already ends runs early, at its rungs; early stopping (run `{}`) \
                 applies to grid and random sweeps: remove patience, or use method = \"grid\"",
                crate::text::clean(&r.name)
            ),
        ));
    }
    let search = match expansion.search {
        None => None,
        Some((keys, brackets)) => Some(search_plan(
            SearchKeys { metric, ..keys },
            base.train.epochs,
            &brackets,
            &point_hashes,
        )),
    };
    let mut seen = std::collections::HashMap::new();
    for (i, run) in runs.iter().enumerate() {
        if let Some(first) = seen.insert(run.config.hash(), i) {
            return Err(err(
                locate_table(text, "sweep"),
                Some("sweep"),
                format!(
                    "sweep points {} and {} give the same run ({}): remove the repeated value",
                    first + 1,
                    i + 1,
                    crate::text::clean(&run.name)
                ),
            ));
        }
    }
    Ok(Experiment {
        name,
        description,
        path: file.to_string(),
        text: text.to_string(),
        runs,
        keep_initial: spec.store.initial_weights,
        search,
        metric,
    })
}

/// The plan of an adaptive search: each bracket's candidates (by config hash, a repeat within a bracket
/// kept once) and rungs.
fn search_plan(
    keys: SearchKeys,
    max_epochs: usize,
    brackets: &[Vec<usize>],
    point_hashes: &[String],
) -> Plan {
    // Each bracket's candidates by config hash, a repeat drawn within a bracket kept once.
    let members: Vec<Vec<String>> = brackets
        .iter()
        .map(|points| {
            let mut seen = std::collections::HashSet::new();
            points
                .iter()
                .map(|&i| point_hashes[i].clone())
                .filter(|h| seen.insert(h.clone()))
                .collect()
        })
        .collect();
    let epochs_of: Vec<Vec<usize>> = match keys.method {
        Method::Halving => vec![
            halving_rungs(
                members.first().map_or(0, Vec::len),
                keys.min_epochs,
                max_epochs,
                keys.eta,
            )
            .iter()
            .map(|r| r.epochs)
            .collect(),
        ],
        Method::Hyperband => hyperband_brackets(keys.min_epochs, max_epochs, keys.eta)
            .iter()
            .map(|rungs| rungs.iter().map(|r| r.epochs).collect())
            .collect(),
    };
    let plan_brackets = epochs_of.into_iter().zip(members).collect();
    Plan::new(
        keys.method,
        keys.eta,
        keys.min_epochs,
        max_epochs,
        keys.metric,
        plan_brackets,
    )
}

/// The line that sets a dotted key (`train.batch_size`): its `[sweep]` entry if it has one, else its
/// assignment in its section.
pub(crate) fn locate_key(text: &str, dotted: &str) -> Option<usize> {
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
        // `train.learning_rate = [...]` unquoted inside the section: its first part is the key TOML saw.
        if line.contains('=')
            && in_section
            && !line.trim_start().starts_with(['"', '\''])
            && let Some((first, _)) = lhs.split_once('.')
            && first.trim() == key
        {
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

/// Serde's names for the types a spec's values have, in words a spec's author reads.
const TYPE_WORDS: &[(&str, &str)] = &[
    ("expected usize", "expected a whole number >= 0 (e.g. 10)"),
    ("expected u64", "expected a whole number >= 0 (e.g. 10)"),
    ("expected f64", "expected a number (e.g. 0.1)"),
    ("expected a boolean", "expected true or false"),
    (
        "expected a string",
        "expected text in quotes (e.g. \"relu\")",
    ),
    (
        "expected a sequence",
        "expected a list in brackets (e.g. [784, 512, 10])",
    ),
];

/// Add "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" and "unknown variant"
/// messages, and name types in words ("expected f64" is "expected a number (e.g. 0.1)").
fn with_suggestion(msg: &str) -> String {
    let mut msg = msg.to_string();
    for (serde, words) in TYPE_WORDS {
        if msg.ends_with(serde) {
            msg = format!("{}{words}", &msg[..msg.len() - serde.len()]);
        }
    }
    let msg = msg.as_str();
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
    fn a_repeated_random_draw_is_one_run() {
        let e = parse_ok(
            "[sweep]\nmethod = \"random\"\ntrials = 20\n\"train.batch_size\" = { choice = [10, 32] }\n",
        );
        assert_eq!(e.runs.len(), 2);
    }

    #[test]
    fn a_repeated_sweep_value_is_refused() {
        let e = parse_err("[sweep]\n\"train.seed\" = [1, 2, 1]\n");
        assert_eq!(e.line, Some(1));
        assert!(
            e.msg.contains("sweep points 1 and 3 give the same run"),
            "{}",
            e.msg
        );
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
}
