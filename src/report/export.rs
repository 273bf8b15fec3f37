//! Taking trained weights elsewhere: a stored run's weights (checked against their hash and its config)
//! and the safetensors file they are written to, loadable by the Python `safetensors` package and PyTorch.

use std::collections::HashMap;

use crate::core::config::{Dtype, RunConfig};
use crate::core::model::Snapshot;
use crate::error::{Error, Result};
use crate::store::{RunStatus, Store, WeightsKind};

/// A stored run's weights of one kind with what is needed to use them.
pub struct StoredModel {
    pub run_id: i64,
    pub kind: WeightsKind,
    pub status: RunStatus,
    pub diverged_epoch: Option<i64>,
    pub config: RunConfig,
    pub params: Snapshot,
    pub config_hash: String,
}

/// Read a run's `initial`, `final` or (for an unfinished run) latest `checkpoint` weights, checked
/// against their stored hash and against the run's config (layer sizes and dtype).
pub fn load(store: &Store, run_id: i64, kind: WeightsKind) -> Result<StoredModel> {
    let row = store.run(run_id)?;
    let config = row.config(store)?;
    // Initial weights kept as their hash only are drawn again from the config and checked against it.
    let params = match kind {
        WeightsKind::Initial => store.initial_weights(run_id)?,
        k => store.weights(run_id, k)?,
    };
    let params = params.ok_or_else(|| {
        Error::Usage(format!(
            "run {run_id} ({}, {}) has no {} weights{}",
            crate::text::clean(&row.name),
            row.status,
            kind.as_str(),
            match kind {
                WeightsKind::Final => "; it has not finished: try --weights checkpoint",
                WeightsKind::Checkpoint if row.status.is_finished() =>
                    "; a finished run keeps no checkpoint: its last epoch's weights are --weights final",
                _ => "",
            }
        ))
    })?;
    let sizes = params.sizes();
    if sizes != config.model.sizes || params.dtype != config.model.dtype {
        return Err(store.corrupt(format!(
            "run {run_id}, its {} weights are {} {sizes:?} but its config says {} {:?}",
            kind.as_str(),
            params.dtype.as_str(),
            config.model.dtype.as_str(),
            config.model.sizes
        )));
    }
    Ok(StoredModel {
        run_id,
        kind,
        status: row.status,
        diverged_epoch: row.diverged_epoch,
        config,
        params,
        config_hash: row.config_hash,
    })
}

/// Tensor names: `layer{l}.weight` ([out, in], as `torch.nn.Linear(in, out).weight`) and `layer{l}.bias`.
fn tensor_name(layer: usize, param: &str) -> String {
    format!("layer{layer}.{param}")
}

/// `m` as the bytes of a safetensors file.
pub fn safetensors_bytes(m: &StoredModel) -> Result<Vec<u8>> {
    let dtype = match m.params.dtype {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F64 => safetensors::Dtype::F64,
    };
    let mut views = Vec::new();
    for t in &m.params.tensors {
        let view = safetensors::tensor::TensorView::new(dtype, t.shape.clone(), &t.data)
            .map_err(|e| Error::internal(format!("run {}: tensor {}: {e}", m.run_id, t.layer)))?;
        views.push((tensor_name(t.layer, t.param), view));
    }
    let c = &m.config.model;
    let metadata: HashMap<String, String> = [
        ("format", "mlp-runner".to_string()),
        (
            "sizes",
            serde_json::Value::from(c.sizes.clone()).to_string(),
        ),
        ("activation", c.activation.as_str().into()),
        ("output", "softmax".into()),
        ("input_scale", "pixel / 255".into()),
        ("dtype", c.dtype.as_str().into()),
        ("run_id", m.run_id.to_string()),
        ("weights", m.kind.as_str().into()),
        ("weights_sha256", m.params.sha256()),
        ("config_hash", m.config_hash.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::internal(format!("cannot encode safetensors: {e}")))
}
