//! The queries behind `compare` (the report layer's [`crate::report::compare`] does the statistics): an
//! experiment's finished current runs grouped into configurations (runs that differ only by seed), the
//! parameters that vary among them, each configuration's test accuracy by seed, and its tags. Column
//! names come from fixed lists, never from input; values are bound.

use std::collections::BTreeMap;

use rusqlite::types::Value;

use super::{RunStatus, Store, Table};
use crate::core::search::Metric;
use crate::error::Result;

/// The run parameters a comparison may group by: `runs` columns, a fixed list (never user input).
pub(crate) const PARAMS: &[&str] = &[
    "sizes",
    "activation",
    "init",
    "dtype",
    "batch_size",
    "learning_rate",
    "epochs",
    "drop_last",
    "optimizer",
    "dropout",
    "limit_train",
    "limit_test",
    "data_dir",
];

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

impl Store {
    /// The parameters that vary across an experiment's finished runs (a few defaults when none does).
    pub fn varying_params(&self, experiment: &str) -> Result<Vec<&'static str>> {
        let store = self;
        let filter = &finished_filter(store);
        let mut varying = Vec::new();
        for p in PARAMS {
            // `optimizer` is a column of schema 6; every run of an older store trained plain SGD.
            if matches!(*p, "optimizer" | "dropout") && store.version() < 6 {
                continue;
            }
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

    /// One row per configuration of `experiment`: the parameters that vary, `runs`, `diverged`, the pruned
    /// and validation columns when it has them, mean, std, min and max of test accuracy, mean test loss and
    /// time; then `selectable` (it has a completed run to choose by) and `seed_group`, the two last
    /// columns, for the caller to take off. Sorted by the mean of `metric` (lower first for a loss), ties
    /// by its partner metric, then by the parameters.
    pub fn configurations(&self, experiment: &str, metric: Metric) -> Result<Table> {
        let store = self;
        let filter = finished_filter(store);
        let varying = store.varying_params(experiment)?;
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
            extra.push_str(
                "sum(r.status = 'pruned') AS pruned, max(r.epochs_done) AS most_epochs, ",
            );
        }
        if store.version() >= 4 && any("r.val_acc IS NOT NULL")? {
            extra.push_str(
                "avg(CASE WHEN r.status = 'completed' THEN r.val_acc END) AS mean_val_acc, ",
            );
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
        let t = store.select(
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
        Ok(t)
    }

    /// Each configuration's completed test accuracies by seed (the latest run of each seed).
    pub fn seed_accuracies(
        &self,
        experiment: &str,
    ) -> Result<BTreeMap<String, BTreeMap<i64, f64>>> {
        let store = self;
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

    /// The mean test accuracy of each class over each configuration's completed runs (seeds), from
    /// their stored confusion matrices: seed group, one overrides text of the group (its parameters),
    /// class, mean accuracy, runs. Empty before schema 8 (nothing stored).
    pub fn class_accuracies(&self, experiment: &str) -> Result<Table> {
        if self.version() < 8 {
            return Ok(Table::new(&[
                "seed_group",
                "overrides",
                "class",
                "accuracy",
                "runs",
            ]));
        }
        self.select(
            &format!(
                "SELECT r.seed_group, min(m.overrides) AS overrides, c.class, avg(c.accuracy) AS accuracy,
                        count(*) AS runs
                 FROM runs r JOIN {} m ON m.run_id = r.id JOIN class_accuracy c ON c.run_id = r.id
                 WHERE m.experiment = ?1 AND r.status = 'completed' AND {} AND c.split = 'test'
                 GROUP BY r.seed_group, c.class ORDER BY r.seed_group, c.class",
                self.members(),
                self.current("r")
            ),
            &[&experiment],
        )
    }

    /// The tags of each configuration's finished runs (by seed group), sorted; empty for a store without tags.
    pub fn configuration_tags(&self, experiment: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let store = self;
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

    /// Each configuration's seed group and the values of `varying`, in their order.
    pub fn configuration_list(&self, experiment: &str, varying: &[&str]) -> Result<Table> {
        let cols = min_columns(varying);
        self.select(
            &format!(
                "SELECT r.seed_group, {} {} GROUP BY r.seed_group ORDER BY {}",
                cols.join(", "),
                finished_filter(self),
                varying.join(", ")
            ),
            &[&experiment],
        )
    }

    /// The seed group (the config without its seed, hashed) of run `id`.
    pub fn seed_group_of(&self, id: i64) -> Result<Option<String>> {
        let t = self.select("SELECT seed_group FROM runs WHERE id = ?1", &[&id])?;
        Ok(
            match t.rows.into_iter().next().and_then(|r| r.into_iter().next()) {
                Some(Value::Text(g)) => Some(g),
                _ => None,
            },
        )
    }
}
