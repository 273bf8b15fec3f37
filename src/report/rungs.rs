//! What an adaptive search decided, as tables: one row per rung (its epochs, runs, the runs promoted and
//! the best), and the schedule a spec plans (rungs, runs and epochs, total epochs against training every
//! candidate to the end).
//!
//! Reads the store (`rung_members`, `searches`); writes nothing.

use rusqlite::types::Value;

use crate::core::search::Plan;
use crate::error::Result;
use crate::store::search::RungState;
use crate::store::{Store, Table};

/// One row per rung of a search: bracket, rung, epochs, runs (there, and planned), decided, the ids of
/// the runs promoted, the best run and its metric.
pub fn rung_table(rungs: &[RungState], plan: Option<&Plan>) -> Table {
    let mut t = Table::new(&[
        "bracket", "rung", "epochs", "runs", "decided", "promoted", "best_run", "metric", "best",
    ]);
    for r in rungs {
        let promoted: Vec<String> = r
            .members
            .iter()
            .filter(|m| m.promoted == Some(true))
            .map(|m| {
                m.run_id
                    .map_or_else(|| m.config_hash[..8].to_string(), |id| id.to_string())
            })
            .collect();
        let best = r.members.iter().find(|m| m.place == Some(1));
        let planned = plan
            .and_then(|p| p.brackets.get(r.bracket as usize))
            .and_then(|b| b.rungs.get(r.rung as usize))
            .map(|x| x.runs);
        let runs = match planned {
            Some(p) if p != r.members.len() => format!("{} of {p}", r.members.len()),
            _ => r.members.len().to_string(),
        };
        t.rows.push(vec![
            Value::Integer(r.bracket),
            Value::Integer(r.rung),
            Value::Integer(r.epochs),
            Value::Text(runs),
            Value::Text(if r.decided { "yes" } else { "no" }.into()),
            Value::Text(if r.decided {
                promoted.join(" ")
            } else {
                String::new()
            }),
            best.and_then(|m| m.run_id)
                .map_or(Value::Null, Value::Integer),
            Value::Text(r.metric.clone()),
            best.and_then(|m| m.value).map_or(Value::Null, Value::Real),
        ]);
    }
    t
}

/// The schedule of a plan: one row per rung with its runs, its epochs and the epochs it adds, and where
/// it stands in `store` (if given).
pub fn schedule_table(plan: &Plan, store: Option<&Store>) -> Result<Table> {
    let stored = match store {
        Some(s) => s.rungs(&plan.hash())?,
        None => Vec::new(),
    };
    let mut t = Table::new(&[
        "bracket",
        "rung",
        "runs",
        "epochs",
        "epochs_trained",
        "state",
    ]);
    for (b, bracket) in plan.brackets.iter().enumerate() {
        let mut before = 0;
        for (i, rung) in bracket.rungs.iter().enumerate() {
            let state = stored
                .iter()
                .find(|r| r.bracket == b as i64 && r.rung == i as i64)
                .map_or_else(
                    || "to come".to_string(),
                    |r| {
                        if r.decided {
                            let n = r
                                .members
                                .iter()
                                .filter(|m| m.promoted == Some(true))
                                .count();
                            if i + 1 < bracket.rungs.len() {
                                format!("decided: {n} promoted")
                            } else {
                                "decided: the last rung".to_string()
                            }
                        } else {
                            let there = r
                                .members
                                .iter()
                                .filter(|m| m.epochs_done.is_some_and(|e| e >= rung.epochs as i64))
                                .count();
                            format!("{there} of {} runs there", r.members.len())
                        }
                    },
                );
            t.rows.push(vec![
                Value::Integer(b as i64),
                Value::Integer(i as i64),
                Value::Integer(rung.runs as i64),
                Value::Integer(rung.epochs as i64),
                Value::Integer((rung.runs * (rung.epochs - before)) as i64),
                Value::Text(state),
            ]);
            before = rung.epochs;
        }
    }
    Ok(t)
}

/// One line on a plan: method, keys, candidates, and its epochs against training every candidate to the
/// end.
pub fn describe(plan: &Plan) -> String {
    let (planned, full) = plan.epochs();
    let candidates: std::collections::BTreeSet<&String> =
        plan.brackets.iter().flat_map(|b| &b.members).collect();
    format!(
        "{} over {} candidates{} (eta {}, min_epochs {}, up to {} epochs, ranked by {}): {planned} epochs \
         planned, against {full} to train every candidate to {} epochs ({:.1}x fewer)",
        match plan.method {
            crate::core::search::Method::Halving => "successive halving",
            crate::core::search::Method::Hyperband => "Hyperband",
        },
        candidates.len(),
        if plan.brackets.len() > 1 {
            format!(" in {} brackets", plan.brackets.len())
        } else {
            String::new()
        },
        plan.eta,
        plan.min_epochs,
        plan.max_epochs,
        plan.metric.as_str(),
        plan.max_epochs,
        full as f64 / planned.max(1) as f64
    )
}
