//! `compare`: the configurations of an experiment across seeds (runs that differ only by seed grouped),
//! with the parameters that vary, the mean of test accuracy with its 95% interval, its spread, and the
//! best configuration marked; and each configuration against a baseline, paired over seeds.
//!
//! **How the best is chosen.** By the experiment's selection metric ([`Store::selection_metric`]: the
//! spec's `[sweep] metric`, by default validation accuracy when the runs hold a validation split out),
//! as its mean over each configuration's completed seeds. The test figures of every configuration,
//! the best included, are reported and never used to choose: a best chosen on the test set would make
//! its own test figure optimistic. [`selection_note`] says so beside every best.

use std::collections::BTreeMap;

use rusqlite::types::Value;

use super::stats;
use crate::error::{Error, Result};
use crate::store::{Store, Table};

/// The newest experiment name with finished runs, or the one given after checking it exists.
pub fn experiment_name(store: &Store, given: Option<&str>) -> Result<String> {
    let names = store.experiments_with_finished_runs()?;
    match given {
        None => names.first().cloned().ok_or_else(|| {
            Error::Usage(format!(
                "{} has no finished runs yet",
                store.path().display()
            ))
        }),
        Some(g) if names.iter().any(|n| n == g) => Ok(g.to_string()),
        Some(g) => {
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = crate::text::nearest(g, &known)
                .map(|n| format!("did you mean `{}`? ", crate::text::clean(n)))
                .unwrap_or_default();
            Err(Error::Usage(format!(
                "no finished runs of an experiment `{}`; {hint}experiments with finished runs: {}",
                crate::text::clean(&crate::text::truncate(g, 100)),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    crate::text::clean(&known.join(", ")).into_owned()
                }
            )))
        }
    }
}

/// How the best of experiment `experiment` is chosen, in words, for beside every best: the metric, and
/// for a test metric that the figure of the best is then not an unbiased estimate.
pub fn selection_note(store: &Store, experiment: &str) -> Result<String> {
    let metric = store.selection_metric(experiment)?;
    Ok(if metric.needs_validation() {
        format!(
            "best: by mean {} over seeds (validation split); test figures are reported, not used \
             to choose",
            metric.as_str()
        )
    } else {
        format!(
            "best: by mean {} over seeds. No validation split was held out: the best is chosen on \
             the test set,\nso its test figure is optimistic ([data] validation = N holds samples out to \
             choose on)",
            metric.as_str()
        )
    })
}

/// One row per configuration of the experiment (runs that differ only by seed grouped), with the
/// parameters that vary, the mean of test accuracy over seeds with its 95% confidence interval (Student t),
/// spread, min and max; sorted by the selection metric's mean, the best first and marked.
pub fn compare(store: &Store, experiment: &str) -> Result<Table> {
    let metric = store.selection_metric(experiment)?;
    let mut t = store.configurations(experiment, metric)?;
    // The 95% interval of each mean, after the mean; the grouping key is not shown.
    let groups = store.seed_accuracies(experiment)?;
    let at = t
        .columns
        .iter()
        .position(|c| c == "mean_test_acc")
        .unwrap_or(0)
        + 1;
    t.columns.insert(at, "ci95_low".into());
    t.columns.insert(at + 1, "ci95_high".into());
    t.columns.pop();
    t.columns.pop();
    let mut selectable = Vec::with_capacity(t.rows.len());
    let tags = store.configuration_tags(experiment)?;
    if !tags.is_empty() {
        t.columns.push("tags".into());
    }
    for row in t.rows.iter_mut() {
        let group = match row.pop() {
            Some(Value::Text(g)) => g,
            _ => String::new(),
        };
        selectable.push(matches!(row.pop(), Some(Value::Integer(1))));
        if !tags.is_empty() {
            row.push(Value::Text(
                tags.get(&group).map(|t| t.join(",")).unwrap_or_default(),
            ));
        }
        let values: Vec<f64> = groups
            .get(&group)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        let (lo, hi) = match stats::ci95(&values) {
            Some((lo, hi)) => (Value::Real(lo), Value::Real(hi)),
            None => (Value::Null, Value::Null),
        };
        row.insert(at, lo);
        row.insert(at + 1, hi);
    }
    // The first row is the best when it has the metric at all (a search's pruned configurations and
    // diverged ones have no completed run to choose by).
    t.columns.insert(0, "best".into());
    for (i, row) in t.rows.iter_mut().enumerate() {
        let best = i == 0 && selectable.first() == Some(&true);
        row.insert(
            0,
            Value::Text(if best { "*".into() } else { String::new() }),
        );
    }
    Ok(t)
}

/// The experiment's best configuration in three lines: the values of the parameters that vary, the mean
/// of the selection metric over its seeds, and its test accuracy (reported, not used to choose). `None`
/// before any configuration has a completed run.
pub fn best_line(store: &Store, experiment: &str) -> Result<Option<String>> {
    let t = compare(store, experiment)?;
    // One configuration has nothing to be best among.
    if t.rows.len() < 2 {
        return Ok(None);
    }
    let Some(row) = t
        .rows
        .first()
        .filter(|r| matches!(r.first(), Some(Value::Text(s)) if s == "*"))
    else {
        return Ok(None);
    };
    let metric = store.selection_metric(experiment)?;
    let at = |name: &str| t.columns.iter().position(|c| c == name);
    let value = |name: &str| {
        at(name)
            .and_then(|i| row.get(i))
            .map(super::table::cell)
            .unwrap_or_default()
    };
    let runs = at("runs").unwrap_or(1);
    let params: Vec<String> = t.columns[1..runs]
        .iter()
        .zip(&row[1..runs])
        .map(|(k, v)| format!("{k}={}", super::table::cell(v)))
        .collect();
    let chosen = format!("mean_{}", metric.as_str());
    let mut figures = vec![format!("{chosen} {}", value(&chosen))];
    if chosen != "mean_test_acc" {
        figures.push(format!("mean_test_acc {}", value("mean_test_acc")));
    }
    Ok(Some(format!(
        "best configuration (by mean {} over its {} {}):\n  {}\n  {}",
        metric.as_str(),
        value("runs"),
        if value("runs") == "1" { "run" } else { "runs" },
        crate::text::clean(&params.join(",")),
        figures.join(", "),
    )))
}

/// Each configuration of the experiment against a baseline configuration: the difference of mean test
/// accuracy in points, its 95% interval and p-value, paired over the seeds both have (a paired t-test;
/// Welch's test when they share fewer than two), and the verdict in words. The baseline is a run id (its
/// configuration) or `key=value,...` over the parameters that vary (e.g. `learning_rate=0.1`).
pub fn compare_baseline(store: &Store, experiment: &str, baseline: &str) -> Result<Table> {
    let varying = store.varying_params(experiment)?;
    let configs = store.configuration_list(experiment, &varying)?;
    let describe = |row: &[Value]| -> String {
        varying
            .iter()
            .zip(&row[1..])
            .map(|(k, v)| format!("{k}={}", super::table::cell(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let group_of = |row: &[Value]| match &row[0] {
        Value::Text(g) => g.clone(),
        _ => String::new(),
    };
    let as_run = if baseline.contains('=') {
        None
    } else {
        Some(store.resolve(baseline, crate::store::manage::Deleted::Avoid)?)
    };
    let base_group = match as_run {
        Some(id) => {
            let row = store.run(id)?;
            match store.seed_group_of(id)? {
                Some(g) if configs.rows.iter().any(|r| group_of(r) == g) => g,
                _ => {
                    return Err(Error::Usage(format!(
                        "run {id} ({}) is not a finished run of experiment `{}`",
                        crate::text::clean(&row.name),
                        crate::text::clean(experiment)
                    )));
                }
            }
        }
        None => {
            let wanted: Vec<(&str, &str)> = baseline
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let matches: Vec<&Vec<Value>> = configs
                .rows
                .iter()
                .filter(|r| {
                    !wanted.is_empty()
                        && wanted.iter().all(|(k, v)| {
                            varying.iter().position(|p| p == k).is_some_and(|i| {
                                let cell = super::table::cell(&r[i + 1]);
                                let num = |x: &str| x.parse::<f64>().ok();
                                cell == *v || (num(v).is_some() && num(&cell) == num(v))
                            })
                        })
                })
                .collect();
            let all: Vec<String> = configs.rows.iter().map(|r| describe(r)).collect();
            match matches.as_slice() {
                [one] => group_of(one),
                [] => {
                    return Err(Error::Usage(format!(
                        "--baseline {}: no configuration of `{}` matches; give a run id or one of: {}",
                        crate::text::clean(baseline),
                        crate::text::clean(experiment),
                        crate::text::clean(&all.join("; "))
                    )));
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "--baseline {}: {} configurations match; name more parameters: {}",
                        crate::text::clean(baseline),
                        matches.len(),
                        crate::text::clean(
                            &matches
                                .iter()
                                .map(|r| describe(r))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    )));
                }
            }
        }
    };
    let groups = store.seed_accuracies(experiment)?;
    let empty = BTreeMap::new();
    let base = groups.get(&base_group).unwrap_or(&empty);
    let mut columns: Vec<&str> = varying.clone();
    columns.extend([
        "seeds",
        "diff_points",
        "ci95_low",
        "ci95_high",
        "p_value",
        "test",
        "verdict",
    ]);
    let mut t = Table::new(&columns);
    for row in &configs.rows {
        let g = group_of(row);
        let mine = groups.get(&g).unwrap_or(&empty);
        let mut out: Vec<Value> = row[1..].to_vec();
        if g == base_group {
            out.push(Value::Integer(mine.len() as i64));
            out.extend([Value::Null, Value::Null, Value::Null, Value::Null]);
            out.push(Value::Text(String::new()));
            out.push(Value::Text("baseline".into()));
            t.rows.push(out);
            continue;
        }
        let shared: Vec<i64> = mine
            .keys()
            .filter(|s| base.contains_key(s))
            .copied()
            .collect();
        let result = if shared.len() >= 2 {
            let a: Vec<f64> = shared.iter().map(|s| mine[s]).collect();
            let b: Vec<f64> = shared.iter().map(|s| base[s]).collect();
            stats::paired(&a, &b)
        } else {
            let a: Vec<f64> = mine.values().copied().collect();
            let b: Vec<f64> = base.values().copied().collect();
            stats::welch(&a, &b)
        };
        match result {
            Some(c) => {
                out.push(Value::Integer(c.n.0 as i64));
                out.extend([
                    Value::Real(100.0 * c.diff),
                    Value::Real(100.0 * c.ci.0),
                    Value::Real(100.0 * c.ci.1),
                    Value::Real(c.p),
                    Value::Text(c.test.into()),
                    Value::Text(c.verdict()),
                ]);
            }
            None => {
                out.push(Value::Integer(mine.len() as i64));
                out.extend([
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ]);
                out.push(Value::Text(
                    "too few seeds to test (two per configuration, or two shared)".into(),
                ));
            }
        }
        t.rows.push(out);
    }
    Ok(t)
}

/// Each configuration's mean test accuracy per class (over its completed seeds, from the stored
/// confusion matrices) with its worst class, one row per configuration: ranked by the accuracy of class
/// `rank` when given (best first), else by the worst class's (best first). `None` when no completed run
/// of the experiment stored its matrix.
pub fn class_table(store: &Store, experiment: &str, rank: Option<usize>) -> Result<Option<Table>> {
    let t = store.class_accuracies(experiment)?;
    // Per configuration: its parameters (the sweep's overrides but the seed) and each class's accuracy.
    let mut configs: BTreeMap<String, (String, BTreeMap<usize, f64>)> = BTreeMap::new();
    let mut classes = 0;
    for r in &t.rows {
        let (Value::Text(group), Value::Integer(class), Value::Real(acc)) = (&r[0], &r[2], &r[3])
        else {
            continue;
        };
        let label = match &r[1] {
            Value::Text(o) => serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(o)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k != "train.seed")
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        k.rsplit('.').next().unwrap_or(&k),
                        v.to_string().trim_matches('"')
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        };
        let class = usize::try_from(*class).unwrap_or(0);
        classes = classes.max(class + 1);
        configs
            .entry(group.clone())
            .or_insert_with(|| (label, BTreeMap::new()))
            .1
            .insert(class, *acc);
    }
    if configs.is_empty() {
        return Ok(None);
    }
    if let Some(k) = rank.filter(|&k| k >= classes) {
        return Err(Error::Usage(format!(
            "--class {k}: the experiment's runs have classes 0 to {}",
            classes - 1
        )));
    }
    let mut columns = vec!["configuration".to_string()];
    columns.extend((0..classes).map(|k| format!("class_{k}")));
    columns.extend(["worst_class".to_string(), "worst_acc".to_string()]);
    let mut rows: Vec<(f64, Vec<Value>)> = configs
        .into_values()
        .map(|(label, acc)| {
            let worst = acc
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, v)| (*k, *v));
            let key = match rank {
                Some(k) => acc.get(&k).copied().unwrap_or(f64::NEG_INFINITY),
                None => worst.map_or(f64::NEG_INFINITY, |w| w.1),
            };
            let mut row = vec![Value::Text(if label.is_empty() {
                experiment.to_string()
            } else {
                label
            })];
            row.extend((0..classes).map(|k| acc.get(&k).map_or(Value::Null, |v| Value::Real(*v))));
            row.push(worst.map_or(Value::Null, |w| Value::Integer(w.0 as i64)));
            row.push(worst.map_or(Value::Null, |w| Value::Real(w.1)));
            (key, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(Some(Table {
        columns,
        rows: rows.into_iter().map(|(_, r)| r).collect(),
    }))
}
