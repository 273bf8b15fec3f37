//! The dashboard's data: one JSON document per API path, built from the store with bound parameters and
//! bounded results. The live server (`runner ui`) answers them; the static report (`runner report`)
//! embeds them. Reads only.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use serde_json::{Value as Json, json};

use super::super::table::json_rows;
use crate::error::{Error, Result};
use crate::store::manage::Deleted;
use crate::store::{RunStatus, Store, Table};

/// The most runs `/api/runs` lists (a store beyond it lists its newest runs and says so).
pub const MAX_RUNS: usize = 200_000;
/// The most configurations whose curves an experiment page draws.
pub const MAX_GROUPS: usize = 50;

/// A table as `{columns, rows}` with typed cells (rows as arrays: a quarter of the bytes of objects).
fn compact(t: &Table) -> Json {
    let rows: Vec<Json> = json_rows(t)
        .as_array()
        .map(|objs| {
            objs.iter()
                .map(|o| {
                    t.columns
                        .iter()
                        .map(|c| o.get(c).cloned().unwrap_or(Json::Null))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    json!({ "columns": t.columns, "rows": rows })
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Integer(i)) => *i,
        _ => 0,
    }
}

/// `/api/store`: which store this is.
pub fn store_info(store: &Store) -> Json {
    json!({ "path": store.path().display().to_string(), "schema_version": store.version() })
}

/// `/api/version`: a fingerprint of what the pages show, the same from every worker's connection (so not
/// SQLite's per-connection `data_version`): it changes when a run is added, changes status, stores an
/// epoch, beats its heartbeat, is deleted or annotated, or a rung is decided. With the counts for the
/// header.
pub fn version(store: &Store) -> Result<Json> {
    let t = store.dashboard_version()?;
    let row = t.rows.first().cloned().unwrap_or_default();
    Ok(json!({
        "version": row.first().map(super::super::table::cell).unwrap_or_default(),
        "runs": int(row.get(1)),
        "running": int(row.get(2)),
    }))
}

/// `/api/experiments`: each experiment name with its runs by status, its best run (chosen by its
/// selection metric, with that metric's name and value and the run's test accuracy) and time (three
/// queries, whatever the number of experiments). A run shared by two experiments counts in both.
pub fn experiments(store: &Store) -> Result<Json> {
    let t = store.experiment_overview()?;
    let mut by: BTreeMap<String, serde_json::Map<String, Json>> = BTreeMap::new();
    for r in store.experiment_statuses()?.rows {
        by.entry(super::super::table::cell(&r[0]))
            .or_default()
            .insert(super::super::table::cell(&r[1]), json!(int(r.get(2))));
    }
    let mut best: BTreeMap<String, [Json; 4]> = BTreeMap::new();
    for r in store.experiment_bests()?.rows {
        best.insert(
            super::super::table::cell(&r[0]),
            [
                cell_json(&r[1]),
                cell_json(&r[2]),
                cell_json(&r[3]),
                cell_json(&r[4]),
            ],
        );
    }
    let mut out = Vec::new();
    let mut total = 0;
    for row in &t.rows {
        let name = super::super::table::cell(&row[0]);
        total += int(row.get(2));
        let [best_run, selected_by, best_value, best_test_acc] =
            best.remove(&name).unwrap_or_default();
        out.push(json!({
            "name": name,
            "description": super::super::table::cell(&row[1]),
            "runs": int(row.get(2)),
            "statuses": by.remove(&name).unwrap_or_default(),
            "seconds": cell_json(&row[3]),
            "created_at": cell_json(&row[4]),
            "best_run": best_run,
            "selected_by": selected_by,
            "best_value": best_value,
            "best_test_acc": best_test_acc,
        }));
    }
    Ok(json!({ "experiments": out, "runs": total }))
}

fn cell_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!(format!("<{} bytes>", b.len())),
    }
}

/// `/api/runs`: every run (the newest [`MAX_RUNS`]) with the columns of `run_summary_all`, and for a
/// running run the seconds it is expected to take still (its epochs left at its mean epoch time).
pub fn runs(store: &Store) -> Result<Json> {
    serde_json::from_str(&runs_text(store)?)
        .map_err(|e| Error::internal(format!("the runs list is not JSON: {e}")))
}

/// [`runs`] as JSON text, written as the rows come.
pub fn runs_text(store: &Store) -> Result<String> {
    store.runs_json(MAX_RUNS, &[("limit", json!(MAX_RUNS))])
}

/// `/api/run/<id>`: one run: its row, parameters (a flat map of its config), provenance and hashes,
/// tags, epochs, weights (shapes and bytes), the command that verifies it.
pub fn run(store: &Store, id: i64) -> Result<Json> {
    let row = store.run(id)?;
    let t = store.run_columns(id)?;
    let cols = &t.columns;
    let values = t.rows.first().cloned().unwrap_or_default();
    let get = |c: &str| {
        cols.iter()
            .position(|x| x == c)
            .map_or(Json::Null, |i| cell_json(&values[i]))
    };
    let config: BTreeMap<String, Json> = match row.config(store) {
        Ok(c) => flatten(&c),
        Err(_) => BTreeMap::new(),
    };
    let provenance: serde_json::Map<String, Json> = [
        "config_hash",
        "seed_group",
        "dataset_sha256",
        "init_weights_sha256",
        "weights_sha256",
        "metrics_sha256",
        "created_at",
        "started_at",
        "finished_at",
        "seconds",
        "host",
        "pid",
        "crate_version",
        "git_commit",
        "rustc_version",
        "cpu_model",
        "gemm_kernel",
        "math",
        "threads",
        "os",
        "resumes",
        "claim",
    ]
    .iter()
    .map(|c| (c.to_string(), get(c)))
    .collect();
    let envelope: serde_json::Map<String, Json> = super::super::diff::ENVELOPE
        .iter()
        .map(|c| (c.to_string(), get(c)))
        .collect();
    let epochs = store.epoch_table(id)?;
    // Accuracy per class of each epoch, per split: {split: [[acc of class k] per epoch]}.
    let mut classes: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for ((epoch, split), counts) in store.epoch_classes(id)? {
        let col = classes.entry(split).or_default();
        if col.len() < epoch {
            col.resize(epoch, Json::Null);
        }
        col[epoch - 1] = json!(
            counts
                .iter()
                .map(|[n, c]| (*n > 0).then(|| *c as f64 / *n as f64))
                .collect::<Vec<_>>()
        );
    }
    let weights = store.weight_table(id)?;
    let (epochs_done, total, seconds) = (
        row.epochs_done,
        get("epochs").as_i64().unwrap_or(0),
        get("seconds").as_f64(),
    );
    let eta = (row.status == RunStatus::Running && epochs_done > 0)
        .then(|| seconds.map(|s| (total - epochs_done) as f64 * s / epochs_done as f64))
        .flatten();
    Ok(json!({
        "run": {
            "id": id,
            "name": row.name,
            "status": row.status.as_str(),
            "epochs": total,
            "epochs_done": epochs_done,
            "note": get("note"),
            "test_acc": get("test_acc"),
            "val_acc": get("val_acc"),
        },
        "experiment": row.experiment,
        "tags": store.tags(id)?,
        "config": config,
        "provenance": provenance,
        "envelope": envelope,
        "epochs": compact(&epochs),
        "class_accuracy": classes,
        "weights": compact(&weights),
        "eta_seconds": eta,
        "verify": format!("runner verify {id} --db {}", store.path().display()),
        "errors": super::super::errors::errors_json(super::super::errors::of_run(store, id)?.as_ref()),
        // Every stored bit of the run checked against its hashes: the page warns when one does not match.
        "corrupt": crate::store::integrity::check_run(store, id)?
            .findings
            .into_iter()
            .map(|f| f.0)
            .collect::<Vec<_>>(),
    }))
}

/// A config as dotted keys and JSON values.
fn flatten(cfg: &crate::core::config::RunConfig) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    if let Ok(Json::Object(sections)) = serde_json::to_value(cfg) {
        for (section, v) in sections {
            if let Json::Object(inner) = v {
                for (k, v) in inner {
                    out.insert(format!("{section}.{k}"), v);
                }
            }
        }
    }
    out
}

/// The most runs whose per-epoch metric an experiment page draws (intermediate values).
pub const MAX_TRIALS: usize = 2000;

/// A stored number as f64 (`None` for NULL or text).
fn real(v: &Value) -> Option<f64> {
    match v {
        Value::Real(f) => Some(*f),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// `/api/experiment/<name>`: the compare table, the selection metric, every finished run with the
/// values its sweep set and its metric, the parameters that vary, their importance (a functional ANOVA),
/// the optimization history (best so far in the order runs finished), each run's metric per epoch, the
/// learning curves of its configurations (mean and standard deviation over seeds per epoch; best first
/// by the selection metric), and what its searches decided.
pub fn experiment(store: &Store, name: &str) -> Result<Json> {
    use crate::core::search::Metric;
    if !store.has_experiment(name)? {
        return Err(Error::Usage(format!(
            "no experiment {}",
            crate::text::clean(&crate::text::truncate(name, 200))
        )));
    }
    let name = name.to_string();
    // An experiment whose runs are all still training has no configurations to compare yet.
    let compare = match super::super::compare::experiment_name(store, Some(&name)) {
        Ok(_) => super::super::compare::compare(store, &name)?,
        Err(_) => Table::new(&["best"]),
    };
    let description = store.experiment_description(&name)?;
    let metric = store.selection_metric(&name)?;
    let better = |a: f64, b: f64| {
        if metric.higher_is_better() {
            a > b
        } else {
            a < b
        }
    };
    let runs = store.experiment_finished_runs(&name)?;
    // A run's selection metric at its end (columns of `experiment_finished_runs`).
    let value_of = |r: &[Value]| match metric {
        Metric::TestAcc => real(&r[3]),
        Metric::ValAcc => real(&r[4]),
        Metric::TestLoss => real(&r[9]),
        Metric::ValLoss => real(&r[10]),
    };
    // The parameters that vary: the sweep's keys (seed aside) that take more than one value.
    let mut values: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut points = Vec::new();
    let mut completed: Vec<(BTreeMap<String, Json>, f64)> = Vec::new();
    let mut groups: BTreeMap<String, (String, Vec<i64>)> = BTreeMap::new();
    for r in &runs.rows {
        let overrides: serde_json::Map<String, Json> = match &r[6] {
            Value::Text(t) => serde_json::from_str(t).unwrap_or_default(),
            _ => Default::default(),
        };
        let params: BTreeMap<String, Json> = overrides
            .into_iter()
            .filter(|(k, _)| k != "train.seed")
            .map(|(k, v)| (k.rsplit('.').next().unwrap_or(&k).to_string(), v))
            .collect();
        for (k, v) in &params {
            values.entry(k.clone()).or_default().insert(v.to_string());
        }
        let label = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(",");
        let group = super::super::table::cell(&r[5]);
        groups
            .entry(group)
            .or_insert_with(|| (label, Vec::new()))
            .1
            .push(int(Some(&r[0])));
        let value = value_of(r);
        let status = super::super::table::cell(&r[2]);
        if let (Some(v), "completed") = (value, status.as_str()) {
            completed.push((params.clone(), v));
        }
        points.push(json!({
            "run_id": cell_json(&r[0]),
            "seed": cell_json(&r[1]),
            "status": status,
            "test_acc": cell_json(&r[3]),
            "val_acc": cell_json(&r[4]),
            "value": value,
            "finished_at": cell_json(&r[8]),
            "epochs_done": cell_json(&r[11]),
            "params": params,
        }));
    }
    let varying: Vec<String> = values
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k.clone())
        .collect();
    // The optimization history: completed runs in the order they finished, each with the best so far.
    let mut order: Vec<&Json> = points
        .iter()
        .filter(|p| p["status"] == "completed" && p["value"].is_number())
        .collect();
    order.sort_by(|a, b| {
        let key = |p: &Json| {
            (
                p["finished_at"].as_str().unwrap_or("").to_string(),
                p["run_id"].as_i64(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut best: Option<f64> = None;
    let history: Vec<Json> = order
        .iter()
        .map(|p| {
            let v = p["value"].as_f64().unwrap_or(f64::NAN);
            if best.is_none_or(|b| better(v, b)) {
                best = Some(v);
            }
            json!({"run_id": p["run_id"], "value": v, "best": best})
        })
        .collect();
    // Every epoch of the experiment's finished runs, read at once.
    let mut by_run: BTreeMap<i64, Vec<[Option<f64>; 4]>> = BTreeMap::new();
    for r in store.experiment_epochs(&name)?.rows {
        by_run.entry(int(r.first())).or_default().push([
            real(&r[1]),
            real(&r[2]),
            real(&r[3]),
            real(&r[4]),
        ]);
    }
    // Columns of `experiment_epochs` after the run id.
    const EPOCH_COLUMNS: [&str; 4] = ["test_acc", "test_loss", "val_loss", "val_acc"];
    let at = EPOCH_COLUMNS
        .iter()
        .position(|c| *c == metric.as_str())
        .unwrap_or(0);
    // Importance over every candidate: for a search (runs stopped at different epochs), the metric at
    // the epoch every finished run reached, else each completed run's final metric.
    let searched = points.iter().any(|p| p["status"] == "pruned");
    let (importance_runs, importance_epoch) = if searched {
        let epoch = points
            .iter()
            .filter_map(|p| by_run.get(&p["run_id"].as_i64().unwrap_or(0)).map(Vec::len))
            .min()
            .unwrap_or(0);
        let runs: Vec<(BTreeMap<String, Json>, f64)> = points
            .iter()
            .filter_map(|p| {
                let v = by_run
                    .get(&p["run_id"].as_i64()?)?
                    .get(epoch.checked_sub(1)?)?[at]?;
                let params: BTreeMap<String, Json> = p["params"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some((params, v))
            })
            .collect();
        // Each run's metric there, for the slices.
        for p in points.iter_mut() {
            let v = p["run_id"]
                .as_i64()
                .and_then(|id| by_run.get(&id))
                .and_then(|e| e.get(epoch.checked_sub(1)?))
                .and_then(|m| m[at]);
            p["value_at"] = json!(v);
        }
        (runs, Some(epoch))
    } else {
        (completed, None)
    };
    let mut importance = super::super::importance::json(&importance_runs, &varying);
    importance["epoch"] = json!(importance_epoch);
    let trials: Vec<Json> = points
        .iter()
        .take(MAX_TRIALS)
        .map(|p| {
            let id = p["run_id"].as_i64().unwrap_or(0);
            let series: Vec<Option<f64>> = by_run
                .get(&id)
                .map(|e| e.iter().map(|m| m[at]).collect())
                .unwrap_or_default();
            json!({"run_id": id, "status": p["status"], "values": series})
        })
        .collect();
    // Learning curves per configuration, best first by the mean of the selection metric over its
    // completed seeds (configurations without one after, by the best any of their runs reached).
    let final_of: BTreeMap<i64, (Option<f64>, bool)> = points
        .iter()
        .map(|p| {
            (
                p["run_id"].as_i64().unwrap_or(0),
                (p["value"].as_f64(), p["status"] == "completed"),
            )
        })
        .collect();
    let mut ranked: Vec<(&String, &Vec<i64>, bool, f64)> = groups
        .values()
        .map(|(label, ids)| {
            let done: Vec<f64> = ids
                .iter()
                .filter_map(|i| final_of.get(i).filter(|(_, c)| *c).and_then(|(v, _)| *v))
                .collect();
            let score = if done.is_empty() {
                ids.iter()
                    .filter_map(|i| final_of.get(i).and_then(|(v, _)| *v))
                    .fold(
                        f64::NAN,
                        |b, v| if b.is_nan() || better(v, b) { v } else { b },
                    )
            } else {
                done.iter().sum::<f64>() / done.len() as f64
            };
            (label, ids, !done.is_empty(), score)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.2.cmp(&a.2).then_with(|| {
            let (x, y) = if metric.higher_is_better() {
                (b.3, a.3)
            } else {
                (a.3, b.3)
            };
            // NaN (no value) last.
            match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => x.total_cmp(&y),
            }
        })
    });
    let mut curves = Vec::new();
    for (label, ids, _, score) in ranked.into_iter().take(MAX_GROUPS) {
        let mut per: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
        for id in ids {
            for (e, m) in by_run
                .get(id)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                for (k, v) in EPOCH_COLUMNS.iter().zip(m) {
                    if let Some(v) = v.filter(|v| v.is_finite()) {
                        let col = per.entry(k).or_default();
                        if col.len() <= e {
                            col.resize(e + 1, Vec::new());
                        }
                        col[e].push(v);
                    }
                }
            }
        }
        let stat = |f: &dyn Fn(&[f64]) -> Option<f64>| -> serde_json::Map<String, Json> {
            per.iter()
                .map(|(k, cols)| {
                    (
                        k.to_string(),
                        Json::Array(
                            cols.iter()
                                .map(|c| f(c).map_or(Json::Null, |v| json!(v)))
                                .collect(),
                        ),
                    )
                })
                .collect()
        };
        let mean = |c: &[f64]| (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64);
        let std = |c: &[f64]| {
            (c.len() > 1).then(|| {
                let m = c.iter().sum::<f64>() / c.len() as f64;
                (c.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (c.len() - 1) as f64).sqrt()
            })
        };
        let epochs = per.values().map(Vec::len).max().unwrap_or(0);
        curves.push(json!({
            "label": if label.is_empty() { name.clone() } else { label.clone() },
            "runs": ids,
            "seeds": ids.len(),
            "score": score.is_finite().then_some(score),
            "epochs": (1..=epochs).collect::<Vec<_>>(),
            "mean": stat(&mean),
            "std": stat(&std),
        }));
    }
    let mut searches = Vec::new();
    for search in store.searches_of(&name)? {
        let rungs = store.rungs(&search)?;
        searches.push(json!({
            "search": search,
            "describe": format!("{} rungs", rungs.len()),
            "rungs": compact(&super::super::rungs::rung_table(&rungs, None)),
        }));
    }
    let mut statuses = serde_json::Map::new();
    let mut total = 0;
    for r in store.experiment_statuses()?.rows {
        if super::super::table::cell(&r[0]) == name {
            total += int(r.get(2));
            statuses.insert(super::super::table::cell(&r[1]), json!(int(r.get(2))));
        }
    }
    Ok(json!({
        "name": name,
        "description": description,
        "runs": runs.rows.len(),
        "runs_total": total,
        "statuses": statuses,
        "metric": {"name": metric.as_str(), "higher_is_better": metric.higher_is_better()},
        "compare": compact(&compare),
        "selection": super::super::compare::selection_note(store, &name)?,
        "varying": varying,
        "points": points,
        "importance": importance,
        "history": history,
        "trials": trials,
        "groups": curves,
        "searches": searches,
    }))
}

/// A run id from a path segment: digits naming a run of the store (or a 404).
pub fn run_id(store: &Store, segment: &str) -> Result<i64> {
    if segment.is_empty() || segment.len() > 18 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Usage(format!("no run {segment}")));
    }
    store.resolve(segment, Deleted::Avoid)
}
