//! Where a run errs, for people and pages: its stored confusion matrices as aligned text (`runner show`)
//! and as JSON (the dashboard, `show --json`), with each class's accuracy.
//!
//! Reads the store; writes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value as Json, json};

use crate::core::data::{self, DataFormat, Dataset};

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

/// The most misclassified digits a gallery shows (the most confident mistakes first).
pub const GALLERY: usize = 48;

/// Datasets read for galleries, kept while the dashboard runs: a page of another run of the same data
/// does not read it again.
type Datasets = Mutex<HashMap<(PathBuf, DataFormat), Arc<Dataset>>>;

fn datasets() -> &'static Datasets {
    static CACHE: OnceLock<Datasets> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The run's most confident mistakes on the test split with their images: `{images: [{sample, actual,
/// predicted, confidence, pixels (base64 of rows x cols bytes)}], rows, cols, of}`, the images read from
/// the run's dataset after checking that its samples hash to the run's `dataset_sha256`; or `{note}`
/// saying why there are none (nothing stored, data not found, data changed).
pub fn gallery(store: &Store, id: i64, limit: usize) -> Result<Json> {
    let row = store.run(id)?;
    let Some(errors) = of_run(store, id)? else {
        return Ok(
            json!({"note": "no errors stored for this run (it did not complete, or completed \
                                   before the store kept them)"}),
        );
    };
    let cfg = row.config(store)?;
    let dir = PathBuf::from(
        row.data_path
            .clone()
            .unwrap_or_else(|| cfg.data.dir.clone()),
    );
    let key = (dir.clone(), cfg.data.format);
    let cached = datasets().lock().ok().and_then(|c| c.get(&key).cloned());
    let ds = match cached {
        Some(d) => d,
        None => match data::load(&dir, cfg.data.format) {
            Ok(d) => {
                let d = Arc::new(d);
                if let Ok(mut c) = datasets().lock() {
                    c.insert(key, d.clone());
                }
                d
            }
            Err(e) => {
                return Ok(json!({
                    "note": format!(
                        "the run's data is not reachable from here ({}): {e}",
                        dir.display()
                    )
                }));
            }
        },
    };
    let d = &cfg.data;
    let sha = dataset_sha(&dir, &ds, &cfg.data);
    if row.dataset_sha256.as_deref() != Some(sha.as_str()) {
        return Ok(json!({
            "note": format!(
                "the data at {} is not the data the run was trained on (its samples hash to {}, the run \
                 recorded {}): no images shown",
                dir.display(),
                &sha[..12],
                row.dataset_sha256.as_deref().map_or("nothing", |s| &s[..s.len().min(12)])
            )
        }));
    }
    let test = ds.splits(d.limit_train, d.validation, d.limit_test).test;
    let mut misses = errors.misclassified.clone();
    misses.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.sample.cmp(&b.sample))
    });
    let images: Vec<Json> = misses
        .iter()
        .filter(|m| m.sample < test.len())
        .take(limit)
        .map(|m| {
            json!({
                "sample": m.sample,
                "actual": m.actual,
                "label": test.labels[m.sample],
                "predicted": m.predicted,
                "confidence": m.confidence,
                "pixels": base64(test.image(m.sample)),
            })
        })
        .collect();
    Ok(json!({
        "images": images,
        "rows": ds.test.rows,
        "cols": ds.test.cols,
        "of": errors.misclassified.len(),
    }))
}

/// The hash of the samples a run of `data` uses from `ds` (read from `dir`), computed once per
/// dashboard process.
fn dataset_sha(
    dir: &std::path::Path,
    ds: &Dataset,
    data: &crate::core::config::DataSpec,
) -> String {
    type Key = (PathBuf, Option<usize>, Option<usize>, Option<usize>);
    static HASHES: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let key = (
        dir.to_path_buf(),
        data.limit_train,
        data.validation,
        data.limit_test,
    );
    let hashes = HASHES.get_or_init(Default::default);
    if let Some(h) = hashes.lock().ok().and_then(|h| h.get(&key).cloned()) {
        return h;
    }
    let h = ds.sha256(data.limit_train, data.validation, data.limit_test);
    if let Ok(mut m) = hashes.lock() {
        m.insert(key, h.clone());
    }
    h
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        let j = matrix_json(&c);
        assert_eq!(j["counts"][1], json!([0, 1, 1]));
        assert_eq!(j["total"], 4);
    }
}
