//! Where a run errs, for people and pages: its stored confusion matrices as aligned text (`runner show`)
//! and as JSON (the dashboard, `show --json`), with each class's accuracy.
//!
//! Reads the store; writes nothing.

use serde_json::{Value as Json, json};

use crate::core::confusion::{Confusion, Errors};
use crate::error::Result;
use crate::store::Store;

/// Where run `id` errs as stored (`None` when nothing is: a run that did not complete, or completed
/// before the store kept it).
pub fn of_run(store: &Store, id: i64) -> Result<Option<Errors>> {
    let row = store.run(id)?;
    let classes = match row.config(store) {
        Ok(c) => c.model.sizes.last().copied().unwrap_or(0),
        Err(_) => return Ok(None),
    };
    store.run_errors(id, classes)
}

/// The matrix as text: one row per true class, one column per predicted class, then the class's
/// samples and accuracy; a last line with the totals.
pub fn matrix_text(c: &Confusion, split: &str) -> String {
    let width = c
        .counts
        .iter()
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max(c.classes.saturating_sub(1).to_string().len())
        .max(3);
    let mut out = format!(
        "{split} confusion (rows: true class, columns: predicted; {} of {} right):\n",
        c.correct(),
        c.total()
    );
    out.push_str(&format!("{:>5} ", "true"));
    for p in 0..c.classes {
        out.push_str(&format!(" {p:>width$}"));
    }
    out.push_str("   samples  accuracy\n");
    for (a, acc) in c.class_accuracy().iter().enumerate() {
        out.push_str(&format!("{a:>5} "));
        for p in 0..c.classes {
            let n = c.count(a, p);
            if n == 0 && a != p {
                out.push_str(&format!(" {:>width$}", "."));
            } else {
                out.push_str(&format!(" {n:>width$}"));
            }
        }
        let samples: u64 = (0..c.classes).map(|p| c.count(a, p)).sum();
        let acc = acc.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
        out.push_str(&format!("   {samples:>7}  {acc:>8}\n"));
    }
    out
}

/// A matrix as JSON: classes, counts (rows: true class), each class's samples and accuracy, totals.
pub fn matrix_json(c: &Confusion) -> Json {
    let rows: Vec<Vec<u64>> = (0..c.classes)
        .map(|a| (0..c.classes).map(|p| c.count(a, p)).collect())
        .collect();
    json!({
        "classes": c.classes,
        "counts": rows,
        "samples": rows.iter().map(|r| r.iter().sum::<u64>()).collect::<Vec<_>>(),
        "class_accuracy": c.class_accuracy(),
        "correct": c.correct(),
        "total": c.total(),
    })
}

/// Both matrices and the number of misclassified test samples, as JSON (`null` when nothing is stored).
pub fn errors_json(e: Option<&Errors>) -> Json {
    match e {
        None => Json::Null,
        Some(e) => json!({
            "test": matrix_json(&e.test),
            "validation": e.validation.as_ref().map(matrix_json),
            "misclassified": e.misclassified.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::workspace::Prediction;

    #[test]
    fn text_has_a_row_per_class_and_the_totals() {
        let p = |class| Prediction {
            class,
            confidence: 0.9,
        };
        let c = Confusion::of(3, &[0, 1, 1, 2], &[p(0), p(1), p(2), p(2)]);
        let t = matrix_text(&c, "test");
        assert!(t.starts_with("test confusion"), "{t}");
        assert!(t.contains("3 of 4 right"), "{t}");
        let row1 = t.lines().nth(3).unwrap();
        assert!(row1.trim_start().starts_with("1 "), "{t}");
        assert!(row1.ends_with("0.5000"), "{t}");
        let j = matrix_json(&c);
        assert_eq!(j["counts"][1], json!([0, 1, 1]));
        assert_eq!(j["total"], 4);
    }
}
