//! Every stored bit checked: the hashes that cover a run's rows, and the check of one run against them.
//!
//! - Weights: `init_weights_sha256`, `weights_sha256` and `checkpoint_sha256` are SHA-256 over the tensors'
//!   bytes in order (W^1, b^1, W^2, ...), as [`Snapshot::sha256`]; every reader recomputes them from the
//!   bytes it reads (`read_snapshot`) and refuses bytes that do not match.
//! - Epochs: `metrics_sha256` covers every column of the run's epoch rows (`metrics_sha256()`), updated in
//!   the transaction that writes each epoch.
//! - The config: `config_hash` is the hash of the parsed `config_toml`.
//!
//! [`check_run`] checks all of them for one run, with the counts that tie a run's rows together (epochs
//! stored against `epochs_done`, final weights of a finished run, the summary columns against its last
//! epoch). It reads only.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{RunStatus, Store, WeightsKind};
use crate::core::config::{Dtype, RunConfig};
use crate::core::model::{Snapshot, Tensor};
use crate::error::Result;
use crate::text::hex;

/// SHA-256 over a run's epoch rows in order: for each row its epoch (i64) and its six metrics (f64 bits;
/// NULL, which is how SQLite stores a NaN, as a distinct marker), little-endian; then, for a row with a
/// validation metric (schema 4), a 3 byte and `val_loss`, `val_acc` the same way. A row without one
/// hashes as in schema 2.
pub(crate) fn metrics_sha256(conn: &Connection, run_id: i64) -> Result<Option<String>> {
    let val = if has_column(conn, "epochs", "val_loss")? {
        "val_loss, val_acc"
    } else {
        "NULL, NULL"
    };
    let lr = lr_column(conn)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT epoch, train_loss, train_acc, test_loss, test_acc, seconds, train_seconds, {val}, {lr}
         FROM epochs WHERE run_id = ?1 ORDER BY epoch"
    ))?;
    let mut rows = stmt.query([run_id])?;
    let mut h = Sha256::new();
    let mut any = false;
    while let Some(r) = rows.next()? {
        any = true;
        let with_val = !matches!(
            (r.get_ref(7)?, r.get_ref(8)?),
            (ValueRef::Null, ValueRef::Null)
        );
        for i in 0..7 {
            // The schema's types; anything else an edit left there is hashed as what it is.
            match (i, r.get_ref(i)?) {
                (0, ValueRef::Integer(e)) => h.update(e.to_le_bytes()),
                (_, ValueRef::Real(v)) => {
                    h.update([1u8]);
                    h.update(v.to_bits().to_le_bytes());
                }
                (_, ValueRef::Null) => h.update([0u8]),
                (_, other) => {
                    h.update([2u8]);
                    h.update(format!("{other:?}").as_bytes());
                }
            }
        }
        if with_val {
            h.update([3u8]);
            for i in 7..9 {
                match r.get_ref(i)? {
                    ValueRef::Real(v) => {
                        h.update([1u8]);
                        h.update(v.to_bits().to_le_bytes());
                    }
                    ValueRef::Null => h.update([0u8]),
                    other => {
                        h.update([2u8]);
                        h.update(format!("{other:?}").as_bytes());
                    }
                }
            }
        }
        hash_learning_rate(&mut h, r.get_ref(9)?);
    }
    Ok(any.then(|| hex(&h.finalize())))
}

/// `learning_rate` in a SELECT of epochs: the column from schema 6 on, NULL before.
fn lr_column(conn: &Connection) -> Result<&'static str> {
    Ok(if has_column(conn, "epochs", "learning_rate")? {
        "learning_rate"
    } else {
        "NULL"
    })
}

/// An epoch's learning rate in a hash: nothing when NULL (rows written before schema 6 keep the hashes
/// they had), else a marker and its bits (anything an edit left there, as what it is).
fn hash_learning_rate(h: &mut Sha256, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => {}
        ValueRef::Real(v) => {
            h.update([5u8]);
            h.update(v.to_bits().to_le_bytes());
        }
        other => {
            h.update([6u8]);
            h.update(format!("{other:?}").as_bytes());
        }
    }
}

/// The result fingerprint of a finished run: SHA-256 over what `verify` compares and nothing else:
/// `mlp-runner-result-1`, its config hash, its dataset's hash, its status, the hash of its initial
/// weights, then for each epoch row in order its number and its six metrics (train loss and accuracy,
/// test, validation: f64 bits, NULL as a distinct marker), then the hash of its final weights. No
/// timings, ids, hosts or envelope: two runs with the same bits share it, whichever process, shard or
/// store holds them. It also covers the initial weights' hash of a run that keeps only that hash.
/// `None` for a run without final weights (not finished).
pub(crate) fn result_sha256(conn: &Connection, run_id: i64) -> Result<Option<String>> {
    type Head = (
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
    );
    let (config, dataset, status, init, weights): Head = conn.query_row(
        "SELECT config_hash, dataset_sha256, status, init_weights_sha256, weights_sha256
         FROM runs WHERE id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let Some(weights) = weights else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    for part in [
        "mlp-runner-result-1",
        &config,
        dataset.as_deref().unwrap_or(""),
        &status,
        init.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let val = if has_column(conn, "epochs", "val_loss")? {
        "val_loss, val_acc"
    } else {
        "NULL, NULL"
    };
    // Not the epochs' learning rates: they are a function of the config, whose hash is above.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT epoch, train_loss, train_acc, test_loss, test_acc, {val}
         FROM epochs WHERE run_id = ?1 ORDER BY epoch"
    ))?;
    let mut rows = stmt.query([run_id])?;
    while let Some(r) = rows.next()? {
        for i in 0..7 {
            match r.get_ref(i)? {
                ValueRef::Integer(e) => {
                    h.update([4u8]);
                    h.update(e.to_le_bytes());
                }
                ValueRef::Real(v) => {
                    h.update([1u8]);
                    h.update(v.to_bits().to_le_bytes());
                }
                ValueRef::Null => h.update([0u8]),
                other => {
                    h.update([2u8]);
                    h.update(format!("{other:?}").as_bytes());
                }
            }
        }
    }
    h.update(weights.as_bytes());
    Ok(Some(hex(&h.finalize())))
}

/// Does `table` of this database have `column`?
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        rusqlite::params![table, column],
        |r| r.get::<_, i64>(0),
    )? == 1)
}

/// SHA-256 of a run's stored weights of one kind, as stored (no structure check), `None` if it has none.
pub(crate) fn weights_sha256(
    conn: &Connection,
    run_id: i64,
    kind: WeightsKind,
) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM weights WHERE run_id = ?1 AND kind = ?2 ORDER BY layer, param = 'bias'",
    )?;
    let mut rows = stmt.query(params![run_id, kind.as_str()])?;
    let mut h = Sha256::new();
    let mut any = false;
    while let Some(r) = rows.next()? {
        any = true;
        h.update(stored_bytes(r.get_ref(0)?));
    }
    Ok(any.then(|| hex(&h.finalize())))
}

/// The bytes of a stored value as hashed: a BLOB's bytes (a value edited into text: its text's bytes).
fn stored_bytes(v: ValueRef<'_>) -> &[u8] {
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => b,
        _ => &[],
    }
}

/// A run's stored weights of one kind as a [`Snapshot`], checked: the tensors form an MLP (a weight
/// [out, in] and a bias [out] per layer, each layer's input the previous one's output, one known dtype,
/// as many bytes as the shapes say) and their bytes hash to `expected` (when given). `Ok(None)` when the
/// run has none of this kind; `Err(text)` says what is wrong.
pub(crate) fn read_snapshot(
    conn: &Connection,
    run_id: i64,
    kind: WeightsKind,
    expected: Option<&str>,
) -> Result<Option<std::result::Result<Snapshot, String>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT layer, param, shape, dtype, data FROM weights WHERE run_id = ?1 AND kind = ?2
         ORDER BY layer, param = 'bias'",
    )?;
    // Read as stored, not as the types the schema intends: an edited row may hold anything.
    let rows: Vec<[Value; 5]> = stmt
        .query_map(params![run_id, kind.as_str()], |r| {
            let cell = |i: usize| -> rusqlite::Result<Value> {
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Integer(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            };
            Ok([cell(0)?, cell(1)?, cell(2)?, cell(3)?, cell(4)?])
        })?
        .collect::<rusqlite::Result<_>>()?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(snapshot_from_rows(rows, kind, expected)))
}

fn snapshot_from_rows(
    rows: Vec<[Value; 5]>,
    kind: WeightsKind,
    expected: Option<&str>,
) -> std::result::Result<Snapshot, String> {
    let what = format!("{} weights", kind.as_str());
    let text = |v: &Value| match v {
        Value::Text(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let first_dtype = text(&rows[0][3]);
    let dtype = Dtype::parse(&first_dtype).ok_or_else(|| {
        format!(
            "{what}: unknown dtype {:?}",
            crate::text::truncate(&first_dtype, 20)
        )
    })?;
    let mut tensors = Vec::with_capacity(rows.len());
    let mut h = Sha256::new();
    let mut prev_out: Option<usize> = None;
    for (i, [layer, param, shape, dt, data]) in rows.into_iter().enumerate() {
        let layer = match layer {
            Value::Integer(l) => l,
            other => return Err(format!("{what}: a layer number {other:?}")),
        };
        let (param, shape, dt) = (text(&param), text(&shape), text(&dt));
        let data = match data {
            Value::Blob(b) => b,
            Value::Text(t) => {
                return Err(format!(
                    "{what}: layer {layer} {param} is stored as text, not as a BLOB of values (an edit \
                     that joins bytes with `||` makes text; {} bytes)",
                    t.len()
                ));
            }
            other => {
                return Err(format!(
                    "{what}: layer {layer} {param} holds {other:?}, not a BLOB"
                ));
            }
        };
        h.update(&data);
        let want_layer = (i / 2 + 1) as i64;
        let want_param = if i % 2 == 0 { "weight" } else { "bias" };
        if layer != want_layer || param != want_param {
            return Err(format!(
                "{what}: expected layer {want_layer} {want_param}, found layer {layer} {}",
                crate::text::truncate(&param, 20)
            ));
        }
        if dt != dtype.as_str() {
            return Err(format!(
                "{what}: layer {layer} is {dt}, layer 1 {}",
                dtype.as_str()
            ));
        }
        let shape: Vec<usize> = serde_json::from_str(&shape).map_err(|_| {
            format!(
                "{what}: layer {layer} {param}: shape {:?} is not a JSON list of sizes",
                crate::text::truncate(&shape, 40)
            )
        })?;
        let ok_shape = match (param.as_str(), shape.as_slice()) {
            ("weight", [out, inp]) => {
                let fits = prev_out.is_none_or(|p| p == *inp);
                prev_out = Some(*out);
                fits
            }
            ("bias", [out]) => prev_out == Some(*out),
            _ => false,
        };
        if !ok_shape {
            return Err(format!(
                "{what}: layer {layer} {param} has shape {shape:?}, which does not fit the layers"
            ));
        }
        let want_bytes = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("{what}: layer {layer} {param}: shape {shape:?} overflows"))?;
        if data.len() != want_bytes {
            return Err(format!(
                "{what}: layer {layer} {param} of shape {shape:?} holds {} bytes, not {want_bytes}",
                data.len()
            ));
        }
        tensors.push(Tensor {
            layer: layer as usize,
            param: if param == "bias" { "bias" } else { "weight" },
            shape,
            data,
        });
    }
    if !tensors.len().is_multiple_of(2) {
        return Err(format!("{what}: the last layer has no bias"));
    }
    let actual = hex(&h.finalize());
    match expected {
        Some(e) if e != actual => Err(format!(
            "{what} do not match their hash (stored sha256 {e}, the stored bytes hash to {actual})"
        )),
        _ => Ok(Snapshot { dtype, tensors }),
    }
}

/// The optimizer state of a run's checkpoint (`checkpoint_state`), checked against `expected` (its
/// hash) and for its structure: known slot names, a dtype, JSON shapes, bytes that fill them. Whether the
/// shapes fit the run's layers is checked when training resumes from it. `None` if the run has none.
pub(crate) fn read_state(
    conn: &Connection,
    run_id: i64,
    expected: Option<&str>,
) -> Result<Option<std::result::Result<Snapshot, String>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT layer, param, shape, dtype, data FROM checkpoint_state WHERE run_id = ?1
         ORDER BY layer, param LIKE 'bias.%', param",
    )?;
    let rows: Vec<(Value, String, String, String, Value)> = stmt
        .query_map([run_id], |r| {
            let text = |i: usize| -> rusqlite::Result<String> {
                Ok(match r.get_ref(i)? {
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
            };
            Ok((
                r.get::<_, Value>(0)?,
                text(1)?,
                text(2)?,
                text(3)?,
                r.get::<_, Value>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if rows.is_empty() {
        return Ok(None);
    }
    const NAMES: [&str; 9] = [
        "weight.velocity",
        "bias.velocity",
        "weight.m",
        "bias.m",
        "weight.v",
        "bias.v",
        "best.weight",
        "best.bias",
        crate::core::early::COUNTERS,
    ];
    let what = "optimizer state";
    let check = || -> std::result::Result<Snapshot, String> {
        let dtype = Dtype::parse(&rows[0].3).ok_or_else(|| {
            format!(
                "{what}: unknown dtype {:?}",
                crate::text::truncate(&rows[0].3, 20)
            )
        })?;
        let mut h = Sha256::new();
        let mut tensors = Vec::with_capacity(rows.len());
        for (layer, param, shape, dt, data) in &rows {
            let layer = match layer {
                Value::Integer(l) if *l >= 0 => *l as usize,
                other => return Err(format!("{what}: a layer number {other:?}")),
            };
            let Value::Blob(data) = data else {
                return Err(format!(
                    "{what}: layer {layer} {param} is not a BLOB of values"
                ));
            };
            h.update(data);
            let name = NAMES.iter().find(|n| **n == param).ok_or_else(|| {
                format!(
                    "{what}: layer {layer} has an unknown slot {:?}",
                    crate::text::truncate(param, 20)
                )
            })?;
            if dt != dtype.as_str() {
                return Err(format!(
                    "{what}: layer {layer} {param} is {dt}, not {}",
                    dtype.as_str()
                ));
            }
            let shape: Vec<usize> = serde_json::from_str(shape).map_err(|_| {
                format!("{what}: layer {layer} {param}: shape is not a JSON list of sizes")
            })?;
            // Early stopping's counters are three f64 whatever the run's dtype.
            let size = if *name == crate::core::early::COUNTERS {
                8
            } else {
                dtype.size()
            };
            let bytes = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
            if shape.is_empty() || shape.len() > 2 || bytes != Some(data.len()) {
                return Err(format!(
                    "{what}: layer {layer} {param} of shape {shape:?} holds {} bytes",
                    data.len()
                ));
            }
            tensors.push(Tensor {
                layer,
                param: name,
                shape,
                data: data.clone(),
            });
        }
        let actual = hex(&h.finalize());
        match expected {
            Some(e) if e == actual => Ok(Snapshot { dtype, tensors }),
            Some(e) => Err(format!(
                "{what} does not match its hash (stored sha256 {e}, the stored bytes hash to {actual})"
            )),
            None => Err(format!("{what} is stored without a hash")),
        }
    };
    Ok(Some(check()))
}

/// One problem found in a run's stored rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding(pub String);

/// The outcome of checking one run.
#[derive(Debug, Clone)]
pub struct RunCheck {
    pub run_id: i64,
    pub name: String,
    pub status: String,
    /// Empty when every check passed.
    pub findings: Vec<Finding>,
    /// Weight tensors hashed, and their bytes.
    pub tensors: usize,
    pub bytes: usize,
}

struct Row {
    name: String,
    status: String,
    config_toml: String,
    config_hash: String,
    epochs: i64,
    epochs_done: i64,
    diverged_epoch: Option<i64>,
    init_sha: Option<String>,
    final_sha: Option<String>,
    checkpoint_sha: Option<String>,
    checkpoint_epoch: Option<i64>,
    metrics_sha: Option<String>,
    summary: [Option<f64>; 4],
    initial_stored: bool,
    result_sha: Option<String>,
    /// The columns that restate the config, as stored (see [`PARAMETER_COLUMNS`]).
    params: Vec<Value>,
    /// The search that queued the run (schema 4).
    search: Option<String>,
}

/// The `runs` columns that restate a run's config (or a value derived from it): each is checked against
/// the hashed config, so an edit of one is found.
const PARAMETER_COLUMNS: [&str; 18] = [
    "seed",
    "sizes",
    "activation",
    "init",
    "dtype",
    "batch_size",
    "learning_rate",
    "epochs",
    "drop_last",
    "data_dir",
    "data_format",
    "limit_train",
    "limit_test",
    "validation",
    "seed_group",
    "optimizer",
    "dropout",
    "overrides",
];

/// What the config says each of [`PARAMETER_COLUMNS`] holds.
fn parameter_values(c: &RunConfig) -> [Value; 17] {
    let opt = |v: Option<usize>| v.map_or(Value::Null, |v| Value::Integer(v as i64));
    [
        Value::Integer(c.train.seed as i64),
        Value::Text(serde_json::Value::from(c.model.sizes.clone()).to_string()),
        Value::Text(c.model.activation.as_str().into()),
        Value::Text(c.model.init.as_str().into()),
        Value::Text(c.model.dtype.as_str().into()),
        Value::Integer(c.train.batch_size as i64),
        Value::Real(c.train.learning_rate),
        Value::Integer(c.train.epochs as i64),
        Value::Integer(i64::from(c.train.drop_last)),
        Value::Text(c.data.dir.clone()),
        Value::Text(c.data.format.as_str().into()),
        opt(c.data.limit_train),
        opt(c.data.limit_test),
        opt(c.data.validation),
        Value::Text(c.seed_group()),
        Value::Text(c.optimizer.describe()),
        Value::Text(c.model.dropout.describe()),
    ]
}

/// The findings of the columns that restate config `c`: each must hold what the config says, and each
/// value in `overrides` (the sweep's) the config's value at its dotted key.
fn check_parameters(c: &RunConfig, stored: &[Value], find: &mut dyn FnMut(String)) {
    let same = |a: &Value, b: &Value| match (a, b) {
        (Value::Real(x), Value::Real(y)) => x.to_bits() == y.to_bits(),
        (Value::Real(x), Value::Integer(y)) | (Value::Integer(y), Value::Real(x)) => {
            *x == *y as f64
        }
        _ => a == b,
    };
    for ((column, want), have) in PARAMETER_COLUMNS
        .iter()
        .zip(parameter_values(c))
        .zip(stored)
    {
        // `validation` is a column of schema 4, `optimizer` of schema 6: a store before them (read as it
        // is) has NULL there, and every run of it is plain SGD.
        let before_column = *have == Value::Null
            && match *column {
                "optimizer" => c.optimizer.describe() == "sgd",
                "dropout" => c.model.dropout.is_none(),
                _ => false,
            };
        if !same(&want, have) && !before_column {
            find(format!(
                "its column {column} holds {} but its hashed config says {} (the column was edited; the \
                 config is what the run was trained with)",
                show(have),
                show(&want)
            ));
        }
    }
    let Some(Value::Text(overrides)) = stored.get(PARAMETER_COLUMNS.len() - 1) else {
        return;
    };
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(overrides)
    else {
        find(format!(
            "its column overrides is not a JSON object: {}",
            crate::text::truncate(overrides, 80)
        ));
        return;
    };
    let config = c.to_full_json();
    for (key, value) in map {
        let at = key.split('.').try_fold(&config, |v, k| v.get(k));
        let equal = match (at, &value) {
            (Some(serde_json::Value::Number(a)), serde_json::Value::Number(b)) => {
                a.as_f64() == b.as_f64()
            }
            (a, b) => a == Some(b),
        };
        if !equal {
            find(format!(
                "its column overrides says {key} = {value} but its hashed config says {}",
                at.map_or("nothing".to_string(), |v| v.to_string())
            ));
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => format!("{:?}", crate::text::truncate(t, 80)),
        Value::Blob(b) => format!("a BLOB of {} bytes", b.len()),
    }
}

/// Check every stored bit of run `run_id` against its hashes and its rows against each other. Errors
/// only when the store cannot be read (or the run does not exist); what is wrong is in the findings.
pub fn check_run(store: &Store, run_id: i64) -> Result<RunCheck> {
    // One read transaction: a consistent snapshot even while another process writes the run.
    let tx = store.connection().unchecked_transaction()?;
    let result = store.at(check_run_inner(store, run_id));
    tx.finish()?;
    result
}

fn check_run_inner(store: &Store, run_id: i64) -> Result<RunCheck> {
    let conn = store.connection();
    let v2 = store.version() >= 2;
    let sql = format!(
        "SELECT name, status, config_toml, config_hash, epochs, epochs_done, diverged_epoch,
                init_weights_sha256, weights_sha256, {}, checkpoint_epoch, {},
                train_loss, train_acc, test_loss, test_acc, coalesce({}, 1), {}, {}, {}
         FROM runs WHERE id = ?1",
        store.col("checkpoint_sha256", 2),
        store.col("metrics_sha256", 2),
        store.col("initial_stored", 3),
        store.col("result_sha256", 5),
        store.col("search", 4),
        PARAMETER_COLUMNS
            .iter()
            .map(|c| match *c {
                "validation" => store.col(c, 4),
                "optimizer" | "dropout" => store.col(c, 6),
                c => c,
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    let row = conn
        .query_row(&sql, [run_id], |r| {
            Ok(Row {
                name: r.get(0)?,
                status: r.get(1)?,
                config_toml: r.get(2)?,
                config_hash: r.get(3)?,
                epochs: r.get(4)?,
                epochs_done: r.get(5)?,
                diverged_epoch: r.get(6)?,
                init_sha: r.get(7)?,
                final_sha: r.get(8)?,
                checkpoint_sha: r.get(9)?,
                checkpoint_epoch: r.get(10)?,
                metrics_sha: r.get(11)?,
                summary: [r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?],
                initial_stored: r.get(16)?,
                result_sha: r.get(17)?,
                search: r.get(18)?,
                params: (0..PARAMETER_COLUMNS.len())
                    .map(|i| r.get::<_, Value>(19 + i))
                    .collect::<rusqlite::Result<_>>()?,
            })
        })
        .optional()?
        .ok_or_else(|| store.missing_run(run_id))?;
    let mut out = RunCheck {
        run_id,
        name: row.name.clone(),
        status: row.status.clone(),
        findings: Vec::new(),
        tensors: 0,
        bytes: 0,
    };
    let mut find = |s: String| out.findings.push(Finding(s));

    let config = RunConfig::from_toml(&row.config_toml);
    let stateful = config.as_ref().is_ok_and(|c| c.optimizer.is_stateful());
    match config {
        Ok(c) if c.hash() != row.config_hash => find(format!(
            "its stored config hashes to {}, not to its config_hash {}",
            c.hash(),
            row.config_hash
        )),
        Ok(c) => check_parameters(&c, &row.params, &mut find),
        Err(e) => find(format!("its stored config does not parse: {e}")),
    }
    let status = RunStatus::parse(&row.status);
    if status.is_none() {
        find(format!(
            "unknown status {:?}",
            crate::text::truncate(&row.status, 40)
        ));
    }
    // Only a search pauses or prunes a run.
    if matches!(status, Some(RunStatus::Pruned | RunStatus::Paused)) && row.search.is_none() {
        find(format!(
            "it is {} but no search queued it (a plain run is never paused or pruned)",
            row.status
        ));
    }

    // Epoch rows: numbered 1..=n, n = epochs_done, hashed.
    let numbers: Vec<i64> = conn
        .prepare_cached("SELECT epoch FROM epochs WHERE run_id = ?1 ORDER BY epoch")?
        .query_map([run_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if numbers.iter().enumerate().any(|(i, &e)| e != i as i64 + 1) {
        find(format!(
            "its epoch rows are numbered {numbers:?}, not 1 to {}",
            numbers.len()
        ));
    }
    if numbers.len() as i64 != row.epochs_done {
        find(format!(
            "{} epoch rows are stored but epochs_done is {}",
            numbers.len(),
            row.epochs_done
        ));
    }
    if v2 {
        let actual = metrics_sha256(conn, run_id)?;
        if actual != row.metrics_sha {
            find(format!(
                "its epoch rows do not match their hash (stored {}, the rows hash to {})",
                row.metrics_sha.as_deref().unwrap_or("none"),
                actual.as_deref().unwrap_or("none (no rows)")
            ));
        }
    }

    // Weights of each kind against their hash columns.
    let finished = status.is_some_and(RunStatus::is_finished);
    for (kind, hash, needed) in [
        // Initial weights are stored only when the spec asked; otherwise their hash alone is kept.
        (
            WeightsKind::Initial,
            &row.init_sha,
            row.initial_stored && (row.init_sha.is_some() || finished),
        ),
        (WeightsKind::Final, &row.final_sha, finished),
        (
            WeightsKind::Checkpoint,
            &row.checkpoint_sha,
            !finished && row.checkpoint_epoch.is_some(),
        ),
    ] {
        // Schema 1 stored no checkpoint hash: such a checkpoint is checked for its structure only.
        let expected = match (kind, v2) {
            (WeightsKind::Checkpoint, false) => None,
            _ => hash.as_deref(),
        };
        match read_snapshot(conn, run_id, kind, expected)? {
            None if needed => find(format!("its {} weights are missing", kind.as_str())),
            None => {}
            Some(_) if !needed => find(format!(
                "it holds {} weights it should not have as a {} run",
                kind.as_str(),
                row.status
            )),
            Some(Err(e)) => find(e),
            Some(Ok(s)) => {
                if hash.is_none() && (kind != WeightsKind::Checkpoint || v2) {
                    find(format!("its {} weights have no stored hash", kind.as_str()));
                }
                out.tensors += s.tensors.len();
                out.bytes += s.tensors.iter().map(|t| t.data.len()).sum::<usize>();
            }
        }
    }

    // The optimizer state of a checkpoint (schema 6): there exactly when a run with a rule that keeps
    // state has a checkpoint, and matching its hash.
    if store.version() >= 6 {
        let expected: Option<String> = conn.query_row(
            "SELECT checkpoint_state_sha256 FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        let needed = stateful && !finished && row.checkpoint_epoch.is_some();
        match read_state(conn, run_id, expected.as_deref())? {
            None if needed => find("its checkpoint's optimizer state is missing".into()),
            None if expected.is_some() => {
                find("it has a hash of optimizer state but no rows of it".into())
            }
            None => {}
            Some(_) if !needed => find(format!(
                "it holds optimizer state it should not have as a {} run{}",
                row.status,
                if stateful { "" } else { " of plain SGD" }
            )),
            Some(Err(e)) => find(format!("its checkpoint's {e}")),
            Some(Ok(s)) => {
                out.tensors += s.tensors.len();
                out.bytes += s.tensors.iter().map(|t| t.data.len()).sum::<usize>();
            }
        }
    }

    if finished && !row.initial_stored && row.init_sha.is_none() {
        find("its initial weights have no stored hash".into());
    }

    // A finished run's rows agree with each other; early stopping completes a run before its epochs.
    let stopped: Option<i64> = if store.version() >= 6 {
        conn.query_row(
            "SELECT stopped_epoch FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )?
    } else {
        None
    };
    match status {
        Some(RunStatus::Completed)
            if row.epochs_done != row.epochs && stopped != Some(row.epochs_done) =>
        {
            find(format!(
                "it is completed with {} of its {} epochs{}",
                row.epochs_done,
                row.epochs,
                stopped.map_or(String::new(), |e| format!(" (early stopping says {e})"))
            ))
        }
        Some(RunStatus::Diverged) if row.diverged_epoch != Some(row.epochs_done) => find(format!(
            "it diverged at epoch {:?} but has {} epochs stored",
            row.diverged_epoch, row.epochs_done
        )),
        _ => {}
    }
    if let Some(cp) = row.checkpoint_epoch
        && !finished
        && cp != row.epochs_done
    {
        find(format!(
            "its checkpoint is of epoch {cp} but {} epochs are stored",
            row.epochs_done
        ));
    }
    // The result fingerprint (schema 5) of a finished run: over its config, data, status, initial weights'
    // hash, epoch rows and final weights (an edited initial-weights hash of a run that keeps only the hash
    // shows here).
    if store.version() >= 5 && finished {
        let actual = result_sha256(conn, run_id)?;
        if actual != row.result_sha {
            find(format!(
                "its result fingerprint does not match its rows (stored {}, they hash to {}): a hash, a \
                 metric or the status was edited",
                row.result_sha.as_deref().unwrap_or("none"),
                actual.as_deref().unwrap_or("none")
            ));
        }
    }
    if row.epochs_done > 0 && !numbers.is_empty() {
        let last: [Option<f64>; 4] = conn.query_row(
            "SELECT train_loss, train_acc, test_loss, test_acc FROM epochs WHERE run_id = ?1
             ORDER BY epoch DESC LIMIT 1",
            [run_id],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
        )?;
        let bits = |a: [Option<f64>; 4]| a.map(|v| v.map(f64::to_bits));
        if bits(last) != bits(row.summary) {
            find(format!(
                "its summary metrics {:?} differ from its last epoch's {:?}",
                row.summary, last
            ));
        }
    }
    Ok(out)
}
