//! Expanding `[sweep]` into runs: a grid (the cartesian product of value lists), a random search
//! (`trials` draws from a ChaCha stream of the spec's own, so the expansion itself is reproducible), or
//! the candidates of an adaptive search (successive halving over a grid or random draws; Hyperband's
//! brackets, each drawn from a stream of its own), each point named by the values it sets.

use std::collections::BTreeMap;

use crate::core::config::{MAX_EPOCHS, SWEEPABLE};
use crate::core::rng::{Stream, StreamRng};
use crate::core::search::{Method, Metric};
use crate::text::nearest;

/// More runs than this from one spec is almost certainly a typo in a sweep list.
pub const MAX_RUNS: usize = 10_000;

/// A sweep that cannot be expanded: the `[sweep]` key at fault (if one is) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SweepError(pub Option<String>, pub String);

/// (dotted key, value) pairs set by one sweep point.
pub(crate) type Overrides = Vec<(String, toml::Value)>;

/// The `[sweep]` keys of an adaptive search (successive halving, Hyperband), checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchKeys {
    pub method: Method,
    pub eta: usize,
    pub min_epochs: usize,
    pub metric: Metric,
}

/// What `[sweep]` expands to: the points (label, overrides), for an adaptive search its keys and the
/// points each bracket starts with (indices into `points`; halving has one bracket of them all), and the
/// selection metric the spec names (`[sweep] metric`), if it names one.
#[derive(Debug, Clone)]
pub(crate) struct Expansion {
    pub points: Vec<(String, Overrides)>,
    pub search: Option<(SearchKeys, Vec<Vec<usize>>)>,
    pub metric: Option<Metric>,
}

/// Sections a sweep may vary by variants alone: `"optimizer" = [{ kind = "sgd", momentum = 0.9 }, { kind
/// = "adam", "train.learning_rate" = 0.001 }]`.
///
/// A *variant* is an inline table among a sweep key's values: it sets several keys together, each
/// named relative to the sweep key's section (`warmup_steps` under `"optimizer.schedule"` or
/// `"optimizer"`) or as a full dotted path (`"train.learning_rate"`); the base spec's other keys stay.
/// Variants express what a grid cannot (momentum only with SGD, a learning rate per optimizer), and mix
/// with plain values: `"optimizer.schedule" = ["constant", { schedule = "cosine", warmup_steps = 500 }]`.
pub const SECTION_KEYS: &[&str] = &["optimizer"];

/// The section of a sweep key: `optimizer` for `optimizer` and for `optimizer.momentum`.
fn section_of(key: &str) -> &str {
    key.split_once('.').map_or(key, |(s, _)| s)
}

/// The dotted key a variant's key `k` sets under sweep key `key`.
fn variant_key(key: &str, k: &str) -> String {
    if k.contains('.') {
        k.to_string()
    } else {
        format!("{}.{k}", section_of(key))
    }
}

/// Check the variants among a sweep key's values (a list, or a random draw's `{ choice = [...] }`): each
/// key they set is sweepable. `only_variants`: the key is a section, whose values must all be variants.
fn check_variants(key: &str, value: &toml::Value, only_variants: bool) -> Result<(), SweepError> {
    let bad = |msg: String| SweepError(Some(key.to_string()), msg);
    let list = match value {
        toml::Value::Array(a) => a,
        toml::Value::Table(t) if t.len() == 1 && t.contains_key("choice") => match &t["choice"] {
            toml::Value::Array(a) => a,
            _ => return Ok(()),
        },
        _ if only_variants => {
            return Err(bad(format!(
                "a section is swept as a list of inline tables, one per variant, e.g. \
                 \"{key}\" = [{{ kind = \"sgd\", momentum = 0.9 }}, {{ kind = \"adam\" }}]"
            )));
        }
        _ => return Ok(()),
    };
    let section = section_of(key);
    for (i, v) in list.iter().enumerate() {
        let toml::Value::Table(t) = v else {
            if only_variants {
                return Err(bad(format!(
                    "value {} is {v}, not an inline table of [{section}] keys ({{ key = value, ... }})",
                    i + 1
                )));
            }
            continue;
        };
        if t.is_empty() {
            return Err(bad(format!("variant {} sets no key", i + 1)));
        }
        for k in t.keys() {
            let dotted = variant_key(key, k);
            if !SWEEPABLE.contains(&dotted.as_str()) {
                let keys: Vec<&str> = SWEEPABLE
                    .iter()
                    .filter_map(|p| p.strip_prefix(&format!("{section}.")[..]))
                    .collect();
                let hint = nearest(k, &keys)
                    .map(|s| format!("did you mean {s}? "))
                    .unwrap_or_default();
                return Err(bad(format!(
                    "variant {}: {k} is not a key a sweep may set; {hint}the keys of [{section}] are {} \
                     (a key of another section is written as its dotted path, e.g. \"train.learning_rate\")",
                    i + 1,
                    keys.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Add one swept value to a point's overrides: a variant (an inline table) as one override per key it
/// sets.
fn push_override(o: &mut Overrides, key: &str, v: toml::Value) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                o.push((variant_key(key, &k), v));
            }
        }
        v => o.push((key.to_string(), v)),
    }
}

/// The keys of `[sweep]` that are not dotted config paths.
const CONTROL_KEYS: &[&str] = &["method", "trials", "seed", "eta", "min_epochs", "metric"];

/// Expand `[sweep]`. A spec without a sweep has one point with no overrides. `max_epochs` is the spec's
/// `train.epochs` (the most a run of a search gets).
pub(crate) fn expand_sweep(
    sweep: &toml::Table,
    base_seed: u64,
    max_epochs: usize,
) -> Result<Expansion, SweepError> {
    let method = match sweep.get("method") {
        None => "grid",
        Some(toml::Value::String(s))
            if matches!(s.as_str(), "grid" | "random" | "halving" | "hyperband") =>
        {
            s.as_str()
        }
        Some(other) => {
            return Err(SweepError(
                Some("method".into()),
                format!(
                    "must be \"grid\" (default), \"random\", \"halving\" or \"hyperband\"; got {other}"
                ),
            ));
        }
    };
    let mut axes: BTreeMap<&str, &toml::Value> = BTreeMap::new();
    for (key, value) in sweep {
        if CONTROL_KEYS.contains(&key.as_str()) {
            continue;
        }
        if SECTION_KEYS.contains(&key.as_str()) {
            check_variants(key, value, true)?;
            axes.insert(key, value);
            continue;
        }
        if SWEEPABLE.contains(&key.as_str()) {
            check_variants(key, value, false)?;
        } else {
            // `train.learning_rate = [...]` unquoted: TOML reads a table `train` with a key inside.
            if let toml::Value::Table(inner) = value
                && let Some(sub) = inner
                    .keys()
                    .map(|k| format!("{key}.{k}"))
                    .find(|p| SWEEPABLE.contains(&p.as_str()))
            {
                return Err(SweepError(
                    Some(key.clone()),
                    format!(
                        "a dotted sweep key must be quoted: write \"{sub}\" = [...]; unquoted, TOML reads \
                         `{sub} = ...` as a table `{key}` holding a key, not as one dotted key"
                    ),
                ));
            }
            let hint = nearest(key, SWEEPABLE)
                .or_else(|| nearest(key, CONTROL_KEYS))
                .map(|s| format!("did you mean \"{s}\"? "))
                .unwrap_or_default();
            return Err(SweepError(
                Some(key.clone()),
                format!(
                    "unknown sweep key; {hint}sweep keys are dotted paths, one of: {}",
                    SWEEPABLE.join(", ")
                ),
            ));
        }
        axes.insert(key, value);
    }
    let adaptive = matches!(method, "halving" | "hyperband");
    let metric = parse_metric(sweep)?;
    if !adaptive {
        for k in ["eta", "min_epochs"] {
            if sweep.contains_key(k) {
                return Err(SweepError(
                    Some(k.into()),
                    "only applies to method = \"halving\" or \"hyperband\"".into(),
                ));
            }
        }
    }
    let search = if adaptive {
        Some(search_keys(sweep, method, max_epochs, metric, &axes)?)
    } else {
        None
    };
    // Candidates drawn at random: a random sweep, halving with `trials`, every Hyperband bracket.
    let random = method == "random"
        || method == "hyperband"
        || (method == "halving" && sweep.contains_key("trials"));
    if !random {
        for k in ["trials", "seed"] {
            if sweep.contains_key(k) {
                return Err(SweepError(
                    Some(k.into()),
                    "only applies to method = \"random\" (or \"halving\" with random candidates)"
                        .into(),
                ));
            }
        }
        let points = grid(&axes)?;
        let all = (0..points.len()).collect();
        return Ok(Expansion {
            points,
            search: search.map(|k| (k, vec![all])),
            metric,
        });
    }

    let seed = match sweep.get("seed") {
        None => base_seed,
        Some(toml::Value::Integer(n)) if *n >= 0 => *n as u64,
        Some(v) => {
            return Err(SweepError(
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
        return Err(SweepError(
            None,
            format!("a {method} sweep needs at least one key to vary"),
        ));
    }
    if method == "hyperband" {
        if sweep.contains_key("trials") {
            return Err(SweepError(
                Some("trials".into()),
                "Hyperband decides how many candidates each bracket draws (from eta, min_epochs and \
                 train.epochs); leave `trials` out, or use method = \"halving\" with trials"
                    .into(),
            ));
        }
        let keys = search.ok_or_else(|| SweepError(None, "a search has its keys".into()))?;
        let brackets =
            crate::core::search::hyperband_brackets(keys.min_epochs, max_epochs, keys.eta);
        let mut points = Vec::new();
        let mut members = Vec::new();
        let width = brackets
            .iter()
            .map(|b| b[0].runs)
            .max()
            .unwrap_or(1)
            .to_string()
            .len();
        for (b, rungs) in brackets.iter().enumerate() {
            let mut rng = StreamRng::bracket(seed, b as u32);
            let mut mine = Vec::new();
            for t in 0..rungs[0].runs {
                let mut label = format!("bracket={b},trial={t:0width$}");
                let mut overrides = Vec::new();
                for (key, dist) in &dists {
                    let v = dist.sample(&mut rng);
                    label = join_label(&label, key, &v);
                    push_override(&mut overrides, key, v);
                }
                mine.push(points.len());
                points.push((label, overrides));
            }
            members.push(mine);
            if points.len() > MAX_RUNS {
                return Err(SweepError(
                    None,
                    format!(
                        "the search has more than {MAX_RUNS} candidates; use fewer epochs or a larger min_epochs"
                    ),
                ));
            }
        }
        return Ok(Expansion {
            points,
            search: Some((keys, members)),
            metric,
        });
    }

    // Random search (or halving over random candidates): `trials` points, each key drawn from its
    // distribution, in key order.
    let trials = match sweep.get("trials") {
        Some(toml::Value::Integer(n)) if *n >= 1 && (*n as usize) <= MAX_RUNS => *n as usize,
        Some(v) => {
            return Err(SweepError(
                Some("trials".into()),
                format!("must be an integer from 1 to {MAX_RUNS}; got {v}"),
            ));
        }
        None => {
            return Err(SweepError(
                Some("method".into()),
                "a random sweep needs `trials = N` (N >= 1)".into(),
            ));
        }
    };
    let mut rng = StreamRng::new(seed, Stream::Sweep);
    let width = trials.to_string().len();
    let points: Vec<(String, Overrides)> = (0..trials)
        .map(|t| {
            let mut label = format!("trial={t:0width$}");
            let mut overrides = Vec::new();
            for (key, dist) in &dists {
                let v = dist.sample(&mut rng);
                label = join_label(&label, key, &v);
                push_override(&mut overrides, key, v);
            }
            (label, overrides)
        })
        .collect();
    let all = (0..points.len()).collect();
    Ok(Expansion {
        points,
        search: search.map(|k| (k, vec![all])),
        metric,
    })
}

/// The cartesian product of the value lists, in key order.
fn grid(axes: &BTreeMap<&str, &toml::Value>) -> Result<Vec<(String, Overrides)>, SweepError> {
    let mut points: Vec<(String, Overrides)> = vec![(String::new(), Vec::new())];
    for (key, value) in axes {
        let list = match value {
            toml::Value::Array(a) if !a.is_empty() => a,
            toml::Value::Array(_) => {
                return Err(SweepError(
                    Some(key.to_string()),
                    "empty list: a sweep list needs at least one value".into(),
                ));
            }
            _ => {
                return Err(SweepError(
                    Some(key.to_string()),
                    format!("a grid sweep takes a list of values, e.g. \"{key}\" = [{value}]"),
                ));
            }
        };
        let mut next = Vec::with_capacity(points.len() * list.len());
        for (label, overrides) in &points {
            for v in list {
                let mut o = overrides.clone();
                push_override(&mut o, key, v.clone());
                next.push((join_label(label, key, v), o));
            }
        }
        points = next;
        if points.len() > MAX_RUNS {
            return Err(SweepError(
                None,
                format!("the sweep expands to more than {MAX_RUNS} runs; shorten its lists"),
            ));
        }
    }
    Ok(points)
}

/// `eta`, `min_epochs` and `metric` of a search, checked against `train.epochs` (its most epochs).
fn search_keys(
    sweep: &toml::Table,
    method: &str,
    max_epochs: usize,
    metric: Option<Metric>,
    axes: &BTreeMap<&str, &toml::Value>,
) -> Result<SearchKeys, SweepError> {
    let int = |key: &str, default: usize, min: usize| -> Result<usize, SweepError> {
        match sweep.get(key) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if *n >= min as i64 && *n <= MAX_EPOCHS as i64 => {
                Ok(*n as usize)
            }
            Some(v) => Err(SweepError(
                Some(key.into()),
                format!("must be a whole number from {min} to {MAX_EPOCHS}; got {v}"),
            )),
        }
    };
    let eta = int("eta", 3, 2)?;
    let min_epochs = int("min_epochs", 1, 1)?;
    if min_epochs > max_epochs {
        return Err(SweepError(
            Some("min_epochs".into()),
            format!(
                "{min_epochs} is more than train.epochs ({max_epochs}), the most epochs a run gets; lower it \
                 or raise train.epochs"
            ),
        ));
    }
    if axes.contains_key("train.epochs") {
        return Err(SweepError(
            Some("train.epochs".into()),
            "a search decides how many epochs each candidate gets: set train.epochs (the most a run gets) \
             and min_epochs in the spec instead of sweeping it"
                .into(),
        ));
    }
    Ok(SearchKeys {
        method: if method == "hyperband" {
            Method::Hyperband
        } else {
            Method::Halving
        },
        eta,
        min_epochs,
        metric: metric.unwrap_or_default(),
    })
}

/// `[sweep] metric`: how the experiment's best is chosen (and, for a search, what it ranks by), if the
/// spec names it.
fn parse_metric(sweep: &toml::Table) -> Result<Option<Metric>, SweepError> {
    Ok(match sweep.get("metric") {
        None => None,
        Some(toml::Value::String(m)) => Some(Metric::parse(m).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            SweepError(
                Some("metric".into()),
                format!(
                    "unknown metric \"{}\"; {}one of: {}",
                    crate::text::clean(m),
                    nearest(m, &names)
                        .map(|n| format!("did you mean \"{n}\"? "))
                        .unwrap_or_default(),
                    names.join(", ")
                ),
            )
        })?),
        Some(v) => {
            return Err(SweepError(
                Some("metric".into()),
                format!("must be a metric name in quotes, e.g. \"val_acc\"; got {v}"),
            ));
        }
    })
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
        let bad = |msg: String| SweepError(Some(key.to_string()), msg);
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
        // A section's variant: its values, `kind` bare: sgd+momentum=0.9+nesterov=true.
        toml::Value::Table(t) => t
            .get("kind")
            .map(render_value)
            .into_iter()
            .chain(t.iter().filter(|(k, _)| *k != "kind").map(|(k, v)| {
                let short = k.rsplit('.').next().unwrap_or(k);
                format!("{short}={}", render_value(v))
            }))
            .collect::<Vec<_>>()
            .join("+"),
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
pub(crate) fn set_path(root: &mut toml::Value, dotted: &str, v: toml::Value) {
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
