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
use crate::core::search::Metric;
use crate::error::{Error, Result};
use crate::store::{RunStatus, Store, Table};

/// The run parameters a comparison may group by: `runs` columns, a fixed list (never user input).
const PARAMS: &[&str] = &[
    "sizes",
    "activation",
    "init",
    "dtype",
    "batch_size",
    "learning_rate",
    "epochs",
    "drop_last",
    "limit_train",
    "limit_test",
    "data_dir",
];

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

/// The parameters that vary across an experiment's finished runs (a few defaults when none does).
fn varying(store: &Store, experiment: &str, filter: &str) -> Result<Vec<&'static str>> {
    let mut varying = Vec::new();
    for p in PARAMS {
        let t = store.select(
            &format!("SELECT count(DISTINCT coalesce(r.{p}, '')) {filter}"),
            &[&experiment],
        )?;
        if matches!(t.rows.first().map(|r| &r[0]), Some(Value::Integer(n)) if *n > 1) {
            varying.push(*p);
        }
    }
    if varying.is_empty() {
        varying.extend(["sizes", "batch_size", "learning_rate"]);
    }
    Ok(varying)
}

/// `min(r.p) AS p` for each parameter: its value in a group of runs that share it.
fn min_columns(params: &[&str]) -> Vec<String> {
    params
        .iter()
        .map(|p| format!("min(r.{p}) AS {p}"))
        .collect()
}

/// The finished current runs (not deleted, not superseded) of experiment `?1`: its members.
fn finished_filter(store: &Store) -> String {
    format!(
        "FROM runs r JOIN {} m ON m.run_id = r.id WHERE m.experiment = ?1 AND r.status IN {}
         AND {}",
        store.members(),
        RunStatus::sql_list(&RunStatus::FINISHED),
        store.current("r")
    )
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

/// Each configuration's completed test accuracies by seed (the latest run of each seed).
fn accuracies(store: &Store, experiment: &str) -> Result<BTreeMap<String, BTreeMap<i64, f64>>> {
    let t = store.select(
        &format!(
            "SELECT r.seed_group, r.seed, r.test_acc {} AND r.status = 'completed' AND r.test_acc IS NOT NULL
             ORDER BY r.id",
            finished_filter(store)
        ),
        &[&experiment],
    )?;
    let mut groups: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for row in t.rows {
        if let [Value::Text(g), Value::Integer(seed), Value::Real(acc)] = row.as_slice() {
            groups.entry(g.clone()).or_default().insert(*seed, *acc);
        }
    }
    Ok(groups)
}

/// The tags of each configuration's finished runs (by seed group), sorted; empty for a store without tags.
fn group_tags(store: &Store, experiment: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !store.manages_runs() {
        return Ok(out);
    }
    let t = store.select(
        &format!(
            "SELECT DISTINCT r.seed_group, t.tag {} AND t.run_id = r.id ORDER BY t.tag",
            finished_filter(store).replacen("FROM runs r", "FROM tags t, runs r", 1)
        ),
        &[&experiment],
    )?;
    for row in t.rows {
        if let [Value::Text(g), Value::Text(tag)] = row.as_slice() {
            out.entry(g.clone()).or_default().push(tag.clone());
        }
    }
    Ok(out)
}

/// One row per configuration of the experiment (runs that differ only by seed grouped), with the
/// parameters that vary, the mean of test accuracy over seeds with its 95% confidence interval (Student t),
/// spread, min and max; sorted by the selection metric's mean, the best first and marked.
pub fn compare(store: &Store, experiment: &str) -> Result<Table> {
    let filter = finished_filter(store);
    let metric = store.selection_metric(experiment)?;
    let varying = varying(store, experiment, &filter)?;
    let cols = min_columns(&varying);
    let acc = "CASE WHEN r.status = 'completed' THEN r.test_acc END";
    // A search's pruned runs are counted (with the most epochs a run of the group got), and a validation
    // split adds its mean accuracy; neither column appears without them.
    let any = |cond: &str| -> Result<bool> {
        let t = store.select(
            &format!("SELECT EXISTS (SELECT 1 {filter} AND {cond})"),
            &[&experiment],
        )?;
        Ok(matches!(
            t.rows.first().map(|r| &r[0]),
            Some(Value::Integer(1))
        ))
    };
    let mut extra = String::new();
    if any("r.status = 'pruned'")? {
        extra.push_str("sum(r.status = 'pruned') AS pruned, max(r.epochs_done) AS most_epochs, ");
    }
    if store.version() >= 4 && any("r.val_acc IS NOT NULL")? {
        extra
            .push_str("avg(CASE WHEN r.status = 'completed' THEN r.val_acc END) AS mean_val_acc, ");
        if metric == Metric::ValLoss {
            extra.push_str(
                "avg(CASE WHEN r.status = 'completed' THEN r.val_loss END) AS mean_val_loss, ",
            );
        }
    }
    // Column names come from the fixed metric list; lower is better for a loss.
    let selection = format!(
        "avg(CASE WHEN r.status = 'completed' THEN r.{} END)",
        metric.as_str()
    );
    // Ties broken as a search breaks them: by the partner metric of the same split.
    let direction = |m: Metric| if m.higher_is_better() { "DESC" } else { "ASC" };
    let order = format!(
        "{selection} {} NULLS LAST, avg(CASE WHEN r.status = 'completed' THEN r.{} END) {} NULLS LAST",
        direction(metric),
        metric.partner().as_str(),
        direction(metric.partner())
    );
    let mut t = store.select(
        &format!(
            "SELECT {}, count(*) AS runs, sum(r.status = 'diverged') AS diverged, {extra}
                avg({acc}) AS mean_test_acc,
                CASE WHEN count({acc}) > 1 THEN sqrt(max(0.0, (sum({acc} * {acc}) - count({acc}) * avg({acc}) * avg({acc}))
                     / (count({acc}) - 1))) END AS std_test_acc,
                min({acc}) AS min_test_acc, max({acc}) AS max_test_acc,
                avg(CASE WHEN r.status = 'completed' THEN r.test_loss END) AS mean_test_loss,
                avg(r.seconds) AS mean_seconds, {selection} IS NOT NULL AS selectable,
                r.seed_group AS seed_group
             {filter} GROUP BY r.seed_group ORDER BY {order}, {}",
            cols.join(", "),
            varying.join(", ")
        ),
        &[&experiment],
    )?;
    // The 95% interval of each mean, after the mean; the grouping key is not shown.
    let groups = accuracies(store, experiment)?;
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
    let tags = group_tags(store, experiment)?;
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
    let filter = finished_filter(store);
    let varying = varying(store, experiment, &filter)?;
    let cols = min_columns(&varying);
    let configs = store.select(
        &format!(
            "SELECT r.seed_group, {} {filter} GROUP BY r.seed_group ORDER BY {}",
            cols.join(", "),
            varying.join(", ")
        ),
        &[&experiment],
    )?;
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
            let g: Vec<Value> = store
                .select("SELECT seed_group FROM runs WHERE id = ?1", &[&id])?
                .rows
                .into_iter()
                .next()
                .unwrap_or_default();
            match g.first() {
                Some(Value::Text(g)) if configs.rows.iter().any(|r| &group_of(r) == g) => g.clone(),
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
    let groups = accuracies(store, experiment)?;
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
