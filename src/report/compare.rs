//! `compare`: the configurations of an experiment across seeds (runs that differ only by seed grouped),
//! with the parameters that vary, the mean and spread of test accuracy, and the best mean marked.

use rusqlite::types::Value;

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

/// One row per configuration of the experiment, with the parameters that vary, the mean and spread of
/// test accuracy over seeds, and the best mean marked.
pub fn compare(store: &Store, experiment: &str) -> Result<Table> {
    let filter = format!(
        "FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE e.name = ?1 AND r.status IN {}",
        RunStatus::sql_list(&RunStatus::FINISHED)
    );
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
    let cols: Vec<String> = varying
        .iter()
        .map(|p| format!("min(r.{p}) AS {p}"))
        .collect();
    let acc = "CASE WHEN r.status = 'completed' THEN r.test_acc END";
    let mut t = store.select(
        &format!(
            "SELECT {}, count(*) AS runs, sum(r.status = 'diverged') AS diverged,
                avg({acc}) AS mean_test_acc,
                CASE WHEN count({acc}) > 1 THEN sqrt(max(0.0, (sum({acc} * {acc}) - count({acc}) * avg({acc}) * avg({acc}))
                     / (count({acc}) - 1))) END AS std_test_acc,
                min({acc}) AS min_test_acc, max({acc}) AS max_test_acc,
                avg(CASE WHEN r.status = 'completed' THEN r.test_loss END) AS mean_test_loss,
                avg(r.seconds) AS mean_seconds
             {filter} GROUP BY r.seed_group ORDER BY mean_test_acc DESC NULLS LAST, {}",
            cols.join(", "),
            varying.join(", ")
        ),
        &[&experiment],
    )?;
    t.columns.insert(0, "best".into());
    for (i, row) in t.rows.iter_mut().enumerate() {
        row.insert(
            0,
            Value::Text(if i == 0 { "*".into() } else { String::new() }),
        );
    }
    Ok(t)
}
