//! `diff`: two stored runs side by side: the config fields that differ, the envelope fields that differ,
//! their per-epoch metrics, and for each tensor of their final (and initial) weights whether the two are
//! bit-identical or, if not, their largest absolute difference.
//!
//! Reads through the store's checked reads (weights against their hashes, initial weights drawn again when
//! only their hash is kept); writes nothing.

use std::collections::BTreeMap;

use rusqlite::types::Value;

use crate::core::config::{Dtype, RunConfig};
use crate::core::model::Snapshot;
use crate::error::Result;
use crate::store::{Store, Table, WeightsKind};

/// The envelope and provenance columns compared (everything a run's bits may depend on, and where it ran):
/// by `diff` and the dashboard's comparison.
pub(crate) const ENVELOPE: &[&str] = &[
    "crate_version",
    "git_commit",
    "git_dirty",
    "rustc_version",
    "cargo_lock_sha256",
    "cpu_model",
    "cpu_features",
    "gemm_kernel",
    "math",
    "threads",
    "os",
    "host",
    "dataset_sha256",
];

/// Everything `diff` shows.
#[derive(Debug, Clone)]
pub struct RunDiff {
    pub a: i64,
    pub b: i64,
    /// key, value in a, value in b: the config fields that differ.
    pub config: Table,
    /// field, a, b: the envelope fields that differ.
    pub envelope: Table,
    /// epoch, then each metric of a and of b, and whether the epoch's metrics are bit-identical.
    pub epochs: Table,
    /// kind, layer, param, shape, identical, max_abs_diff.
    pub weights: Table,
}

/// A config as dotted keys (`train.learning_rate`) and their values as TOML text.
fn flatten(cfg: &RunConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(cfg) {
        for (section, v) in t {
            if let toml::Value::Table(inner) = v {
                for (k, v) in inner {
                    out.insert(format!("{section}.{k}"), v.to_string());
                }
            }
        }
    }
    out
}

fn text(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::Text)
}

/// Compare runs `a` and `b` of `store`.
pub fn diff(store: &Store, a: i64, b: i64) -> Result<RunDiff> {
    let (ra, rb) = (store.run(a)?, store.run(b)?);
    let (ca, cb) = (ra.config(store)?, rb.config(store)?);

    let mut config = Table::new(&["key", "a", "b"]);
    let (fa, fb) = (flatten(&ca), flatten(&cb));
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for k in keys {
        let (x, y) = (fa.get(k).cloned(), fb.get(k).cloned());
        if x != y {
            config
                .rows
                .push(vec![Value::Text(k.clone()), text(x), text(y)]);
        }
    }

    let mut envelope = Table::new(&["field", "a", "b"]);
    let read = |id: i64| -> Result<Vec<Option<String>>> {
        let t = store.run_fields_as_text(id, ENVELOPE)?;
        Ok(t.rows
            .first()
            .map(|r| {
                r.iter()
                    .map(|v| match v {
                        Value::Text(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default())
    };
    let (ea, eb) = (read(a)?, read(b)?);
    for (i, field) in ENVELOPE.iter().enumerate() {
        let (x, y) = (ea.get(i).cloned().flatten(), eb.get(i).cloned().flatten());
        if x != y {
            envelope
                .rows
                .push(vec![Value::Text(field.to_string()), text(x), text(y)]);
        }
    }

    let metrics = ["train_loss", "train_acc", "test_loss", "test_acc"];
    let mut columns = vec!["epoch".to_string()];
    for m in metrics {
        columns.push(format!("{m}_a"));
        columns.push(format!("{m}_b"));
    }
    columns.push("identical".into());
    let mut epochs = Table {
        columns,
        rows: Vec::new(),
    };
    let (xa, xb) = (store.epochs(a)?, store.epochs(b)?);
    for e in 0..xa.len().max(xb.len()) {
        let (ma, mb) = (xa.get(e), xb.get(e));
        let vals = |m: Option<&crate::core::train::EpochMetrics>| {
            m.map(|m| [m.train_loss, m.train_acc, m.test_loss, m.test_acc])
        };
        let (va, vb) = (vals(ma), vals(mb));
        let mut row = vec![Value::Integer(e as i64 + 1)];
        for i in 0..4 {
            for v in [va, vb] {
                row.push(v.map_or(Value::Null, |v| real(v[i])));
            }
        }
        let same = match (va, vb) {
            (Some(x), Some(y)) => x.iter().zip(&y).all(|(p, q)| same_bits(*p, *q)),
            _ => false,
        };
        row.push(yes_no(same));
        epochs.rows.push(row);
    }

    let mut weights = Table::new(&[
        "kind",
        "layer",
        "param",
        "shape",
        "identical",
        "max_abs_diff",
    ]);
    for kind in [WeightsKind::Final, WeightsKind::Initial] {
        let load = |id: i64| match kind {
            WeightsKind::Initial => store.initial_weights(id),
            k => store.weights(id, k),
        };
        let (sa, sb) = (load(a)?, load(b)?);
        let (Some(sa), Some(sb)) = (sa, sb) else {
            continue;
        };
        compare_tensors(kind, &sa, &sb, &mut weights);
    }
    Ok(RunDiff {
        a,
        b,
        config,
        envelope,
        epochs,
        weights,
    })
}

fn yes_no(b: bool) -> Value {
    Value::Text(if b { "yes" } else { "no" }.into())
}

fn real(v: f64) -> Value {
    if v.is_nan() {
        Value::Null
    } else {
        Value::Real(v)
    }
}

fn same_bits(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn values(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    }
}

/// One row per tensor the two snapshots share by position: identical bytes, or the largest absolute
/// difference of their values (NULL when their shapes or dtypes differ).
fn compare_tensors(kind: WeightsKind, a: &Snapshot, b: &Snapshot, out: &mut Table) {
    for i in 0..a.tensors.len().max(b.tensors.len()) {
        let (ta, tb) = (a.tensors.get(i), b.tensors.get(i));
        let Some(t) = ta.or(tb) else { continue };
        let shape = |t: Option<&crate::core::model::Tensor>| {
            t.map_or("-".to_string(), |t| {
                serde_json::Value::from(t.shape.clone()).to_string()
            })
        };
        let (shape_text, identical, max) = match (ta, tb) {
            (Some(x), Some(y)) if x.shape == y.shape && a.dtype == b.dtype => {
                let same = x.data == y.data;
                let max = if same {
                    0.0
                } else {
                    values(a.dtype, &x.data)
                        .iter()
                        .zip(values(b.dtype, &y.data))
                        .map(|(p, q)| (p - q).abs())
                        .fold(0.0, f64::max)
                };
                (shape(ta), same, Value::Real(max))
            }
            _ => (
                format!(
                    "{} {} vs {} {}",
                    a.dtype.as_str(),
                    shape(ta),
                    b.dtype.as_str(),
                    shape(tb)
                ),
                false,
                Value::Null,
            ),
        };
        out.rows.push(vec![
            Value::Text(kind.as_str().into()),
            Value::Integer(t.layer as i64),
            Value::Text(t.param.into()),
            Value::Text(shape_text),
            yes_no(identical),
            max,
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Tensor;

    fn snap(vals: &[f32]) -> Snapshot {
        Snapshot {
            dtype: Dtype::F32,
            tensors: vec![Tensor {
                layer: 1,
                param: "weight",
                shape: vec![1, vals.len()],
                data: vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            }],
        }
    }

    #[test]
    fn tensors_are_identical_or_give_their_largest_difference() {
        let mut t = Table::new(&["kind", "layer", "param", "shape", "identical", "max"]);
        compare_tensors(
            WeightsKind::Final,
            &snap(&[1.0, 2.0]),
            &snap(&[1.0, 2.0]),
            &mut t,
        );
        compare_tensors(
            WeightsKind::Final,
            &snap(&[1.0, 2.0]),
            &snap(&[1.5, 1.0]),
            &mut t,
        );
        compare_tensors(
            WeightsKind::Final,
            &snap(&[1.0]),
            &snap(&[1.0, 2.0]),
            &mut t,
        );
        assert_eq!(t.rows[0][4], yes_no(true));
        assert_eq!(t.rows[0][5], Value::Real(0.0));
        assert_eq!(t.rows[1][4], yes_no(false));
        assert_eq!(t.rows[1][5], Value::Real(1.0));
        assert_eq!(t.rows[2][5], Value::Null);
        assert_eq!(t.rows[2][3], Value::Text("f32 [1,1] vs f32 [1,2]".into()));
    }

    #[test]
    fn configs_flatten_to_dotted_keys() {
        let mut c = RunConfig::default();
        c.train.learning_rate = 0.3;
        let f = flatten(&c);
        assert_eq!(f["train.learning_rate"], "0.3");
        assert_eq!(f["model.sizes"], "[784, 512, 10]");
    }
}
