//! Exact re-runs: check a stored run's bits against their hashes, re-train it from its stored config, and
//! compare, bit for bit, the dataset hash, the initial weights, every epoch's metrics and the final
//! weights; report the first difference, the re-run's result fingerprint, and the envelope fields
//! (compiler, commit, GEMM kernel ...) that differ from the stored run.
//!
//! The data is found from any working directory: the folder a `--data-dir` names, else the run's
//! configured folder if it is there from here, else the absolute path the run was trained at (stored
//! with it). Whichever it is, its hash must be the stored dataset hash.

use std::collections::BTreeMap;

use crate::core::data::DataCache;
use crate::core::envelope::{BIT_FIELDS, Envelope};
use crate::core::kernel::Kernel;
use crate::core::model::Snapshot;
use crate::core::train::{Checkpoint, Control, EpochMetrics, Observer, Outcome, Training};
use crate::error::{Error, Result};
use crate::store::{RunStatus, Store, integrity};

/// The outcome of verifying one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: i64,
    pub name: String,
    /// `None`: identical. `Some(text)`: the first difference.
    pub difference: Option<String>,
    /// Envelope fields whose stored value differs from this process: (field, stored, now).
    pub envelope_diffs: Vec<(&'static str, String, String)>,
    pub weights_sha256: String,
    /// What the check of the stored bits against their hashes found (empty: they match).
    pub corrupt: Vec<String>,
    /// A word on how the run was re-trained, when it matters (a matrixmultiply run).
    pub note: Option<String>,
    /// The result fingerprint stored with the run, and the re-run's (when every bit compared equal).
    pub stored_result: Option<String>,
    pub result_sha256: Option<String>,
    /// The data folder the re-run read.
    pub data_dir: String,
}

/// Where `verify` may look for a run's data.
#[derive(Debug, Clone, Default)]
pub struct DataLocation<'a> {
    /// A folder the user named (`--data-dir`): used instead of the stored one.
    pub dir: Option<&'a std::path::Path>,
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Compares the re-run with the stored epochs as it goes and stops at the first difference.
struct Comparer<'a> {
    stored: &'a [EpochMetrics],
    stored_init: Option<&'a str>,
    difference: Option<String>,
    run_id: i64,
    epochs: usize,
    progress: &'a dyn super::Progress,
    bar: Box<dyn super::RunProgress>,
    /// Epochs the re-run has trained.
    seen: usize,
    /// A pruned run: the epoch to stop after, and the parameters there.
    stop_at: Option<usize>,
    stopped_params: Option<Snapshot>,
    /// Where the re-run's final weights err (when it completes).
    errors: Option<crate::core::confusion::Errors>,
    /// The stored per-class counts of each epoch, by (epoch, split) (none before schema 9).
    stored_classes: BTreeMap<(usize, String), crate::core::workspace::ClassCounts>,
}

impl Observer for Comparer<'_> {
    fn on_batch(&mut self, epoch: usize, done: usize, _total: usize, loss_sum: f64) -> Control {
        self.bar.batch(epoch, done, loss_sum);
        Control::Continue
    }

    fn on_start(&mut self, initial: &Snapshot) -> Result<()> {
        let now = initial.sha256();
        if let Some(stored) = self.stored_init
            && stored != now
        {
            self.difference = Some(format!(
                "initial weights: stored sha256 {stored}, re-run {now}"
            ));
        }
        Ok(())
    }

    fn on_epoch(&mut self, m: &EpochMetrics, checkpoint: &Checkpoint) -> Result<Control> {
        if self.difference.is_some() {
            return Ok(Control::Stop);
        }
        self.seen = m.epoch;
        let Some(s) = self.stored.get(m.epoch - 1) else {
            self.difference = Some(format!(
                "epoch {}: the re-run has it, the store does not",
                m.epoch
            ));
            return Ok(Control::Stop);
        };
        let opt = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
        if s.val_acc.is_some() != m.val_acc.is_some() {
            self.difference = Some(format!(
                "epoch {}: the {} validation metrics, the re-run {}",
                m.epoch,
                if s.val_acc.is_some() {
                    "store has"
                } else {
                    "store has no"
                },
                if m.val_acc.is_some() {
                    "has them"
                } else {
                    "has none"
                }
            ));
            return Ok(Control::Stop);
        }
        self.progress.log(&format!(
            "run {}: epoch {}/{} re-trained, equal to the stored one",
            self.run_id, m.epoch, self.epochs
        ));
        for (metric, a, b) in [
            ("train_loss", s.train_loss, m.train_loss),
            ("train_acc", s.train_acc, m.train_acc),
            ("test_loss", s.test_loss, m.test_loss),
            ("test_acc", s.test_acc, m.test_acc),
            ("val_loss", opt(s.val_loss), opt(m.val_loss)),
            ("val_acc", opt(s.val_acc), opt(m.val_acc)),
            // Epochs stored before schema 6 have no learning rate to compare.
            (
                "learning_rate",
                s.learning_rate.or(m.learning_rate).unwrap_or(0.0),
                m.learning_rate.or(s.learning_rate).unwrap_or(0.0),
            ),
        ] {
            if !same(a, b) {
                self.difference = Some(format!(
                    "epoch {}, {metric}: stored {a:?} ({:#018x}), re-run {b:?} ({:#018x})",
                    m.epoch,
                    a.to_bits(),
                    b.to_bits()
                ));
                return Ok(Control::Stop);
            }
        }
        for (split, now) in [("test", &m.test_classes), ("validation", &m.val_classes)] {
            if let (Some(stored), Some(now)) =
                (self.stored_classes.get(&(m.epoch, split.to_string())), now)
                && stored != now
            {
                self.difference = Some(format!(
                    "epoch {}, {split} accuracy per class: stored {stored:?}, re-run {now:?} (samples, \
                     correct per class; table epoch_classes was changed)",
                    m.epoch
                ));
                return Ok(Control::Stop);
            }
        }
        if checkpoint.errors.is_some() {
            self.errors = checkpoint.errors.clone();
        }
        if self.stop_at == Some(m.epoch) {
            self.stopped_params = Some(checkpoint.params.clone());
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

/// Check run `run_id`'s stored bits against their hashes, then re-train it and compare it with what the
/// store holds. Both results are in the report: a corrupt store says where its bits went wrong, and the
/// re-run says what the right values are. Progress (per batch, and a line per epoch) goes to `progress`.
pub fn verify_run(
    store: &Store,
    cache: &mut DataCache,
    run_id: i64,
    at: &DataLocation<'_>,
    progress: &dyn super::Progress,
) -> Result<Report> {
    let row = store.run(run_id)?;
    if !row.status.is_finished() {
        return Err(Error::Usage(format!(
            "run {run_id} ({}) is {}: only completed, diverged or pruned runs can be verified",
            crate::text::clean(&row.name),
            row.status
        )));
    }
    let stored_bits = integrity::check_run(store, run_id)?;
    let mut cfg = row.config(store)?;
    // A run a search pruned ended at its last rung's epochs: it is re-trained with its config (whose
    // epochs a cosine schedule depends on) and stopped there.
    let stop_at = (row.status == RunStatus::Pruned)
        .then(|| usize::try_from(row.epochs_done).unwrap_or(0).max(1));
    // Re-trained with the kernel it was trained with: an f64 run of a version before lanes8 used
    // matrixmultiply's GEMM, whose bits depend on the kernel the CPU selects.
    let trained_with = row.trained_with();
    let kernel = trained_with.kernel(cfg.model.dtype);
    let math = trained_with.math();
    let current = trained_with.envelope(cfg.model.dtype);
    let envelope_diffs = BIT_FIELDS
        .iter()
        .filter_map(|&field| {
            let stored = row.envelope.get(field).cloned().flatten();
            let now = current.text(field);
            (!Envelope::same_bits(field, stored.as_deref(), now.as_deref())).then(|| {
                (
                    field,
                    stored.unwrap_or_else(|| "(none)".into()),
                    now.unwrap_or_else(|| "(none)".into()),
                )
            })
        })
        .collect();
    let mut report = Report {
        run_id,
        name: row.name.clone(),
        difference: None,
        envelope_diffs,
        weights_sha256: String::new(),
        corrupt: stored_bits.findings.into_iter().map(|f| f.0).collect(),
        stored_result: row.result_sha256.clone(),
        result_sha256: None,
        data_dir: String::new(),
        note: match kernel {
            Kernel::Gemm => Some(
                "trained with matrixmultiply's GEMM (before the lanes8 kernels): re-trained with it, so its \
                 bits match only where the CPU selects the same GEMM kernel; `runner <spec> --force` trains \
                 it again with the chain kernels, whose bits are the same on every CPU"
                    .to_string(),
            ),
            Kernel::Lanes => Some(
                "trained with the lanes kernels (before the chain kernels): re-trained with them, whose bits \
                 are the same on every CPU; `runner <spec> --force` trains it again with the chain kernels \
                 (other bits: a different order of additions)"
                    .to_string(),
            ),
            Kernel::Chain => None,
        },
    };

    cfg.data.dir = locate_data(&row, &cfg.data.dir, at)?;
    report.data_dir = cfg.data.dir.clone();
    let dataset_sha = cache.sha256(
        &cfg.data.dir,
        cfg.data.format,
        cfg.data.limit_train,
        cfg.data.validation,
        cfg.data.limit_test,
    )?;
    if row.dataset_sha256.as_deref() != Some(dataset_sha.as_str()) {
        report.difference = Some(format!(
            "dataset: stored sha256 {}, the data in {} now hashes to {dataset_sha}",
            row.dataset_sha256.as_deref().unwrap_or("(none)"),
            crate::text::clean(&cfg.data.dir)
        ));
        return Ok(report);
    }
    let stored = store.epochs(run_id)?;
    let data = cache.get(&cfg.data.dir, cfg.data.format)?;
    let name = crate::text::clean(&row.name).into_owned();
    let batches = crate::core::loader::batches(
        super::run::train_samples(&cfg, data.train.len()),
        cfg.train.batch_size,
        cfg.train.drop_last,
    );
    let bar = progress.run_started(&super::RunStart {
        run_id,
        name: &name,
        epochs: cfg.train.epochs,
        done: 0,
        batches,
        batch_size: cfg.train.batch_size,
    });
    let mut cmp = Comparer {
        stored: &stored,
        stored_init: row.init_weights_sha256.as_deref(),
        difference: None,
        run_id,
        epochs: stop_at.unwrap_or(cfg.train.epochs),
        progress,
        bar,
        seen: 0,
        stop_at,
        stopped_params: None,
        errors: None,
        stored_classes: store.epoch_classes(run_id)?,
    };
    let outcome = Training::new(&cfg, data)
        .kernel(kernel)
        .math(math)
        .run(&mut cmp);
    cmp.bar.finish();
    let outcome = outcome?;
    report.difference = cmp.difference;
    if report.difference.is_some() {
        return Ok(report);
    }
    let final_params = match (outcome, cmp.stopped_params) {
        (Outcome::Completed(p) | Outcome::Diverged { last: p, .. }, _) => p,
        (Outcome::Stopped { .. }, Some(p)) => p,
        (Outcome::Stopped { epoch }, None) => {
            report.difference = Some(format!("the re-run stopped at epoch {epoch}"));
            return Ok(report);
        }
    };
    // Early stopping may end a run before its epochs: the re-run must end where the stored one did.
    let ran = cmp.seen;
    if stored.len() != ran {
        report.difference = Some(format!(
            "the store has {} epochs, the re-run {ran}",
            stored.len()
        ));
        return Ok(report);
    }
    report.weights_sha256 = final_params.sha256();
    if row.weights_sha256.as_deref() != Some(report.weights_sha256.as_str()) {
        report.difference = Some(format!(
            "final weights: stored sha256 {}, re-run {}",
            row.weights_sha256.as_deref().unwrap_or("(none)"),
            report.weights_sha256
        ));
        return Ok(report);
    }
    // Where the final weights err, as stored when the run completed (runs of schema 8 on): the re-run's
    // must be the same, to the bit of each confidence.
    let classes = cfg.model.sizes.last().copied().unwrap_or(0);
    if let (Some(stored), Some(now)) = (store.run_errors(run_id, classes)?, &cmp.errors)
        && !same_errors(&stored, now)
    {
        report.difference = Some(format!(
            "where it errs: the stored confusion matrix or misclassified samples ({} stored, {} \
             correct of {}) differ from the re-run's ({}, {} of {}), though the weights are equal: the \
             rows of tables confusion / misclassified were changed",
            stored.misclassified.len(),
            stored.test.correct(),
            stored.test.total(),
            now.misclassified.len(),
            now.test.correct(),
            now.test.total()
        ));
        return Ok(report);
    }
    // Every compared bit is equal: the re-run's fingerprint is that of the stored rows (recomputed, so
    // that an edited stored fingerprint shows as corrupt in the check above, not as a difference here).
    report.result_sha256 = integrity::result_sha256(store.connection(), run_id)?;
    Ok(report)
}

/// Equal errors: the same matrices and the same misclassified samples with the same confidence bits.
fn same_errors(a: &crate::core::confusion::Errors, b: &crate::core::confusion::Errors) -> bool {
    a.test == b.test
        && a.validation == b.validation
        && a.misclassified.len() == b.misclassified.len()
        && a.misclassified.iter().zip(&b.misclassified).all(|(x, y)| {
            (x.sample, x.actual, x.predicted) == (y.sample, y.actual, y.predicted)
                && x.confidence.to_bits() == y.confidence.to_bits()
        })
}

/// The folder to read run `row`'s data from (see the module doc); an error naming the run, the places
/// looked at, and the fix when none holds it.
fn locate_data(
    row: &crate::store::RunRow,
    configured: &str,
    at: &DataLocation<'_>,
) -> Result<String> {
    if let Some(dir) = at.dir {
        return if dir.is_dir() {
            Ok(dir.display().to_string())
        } else {
            Err(Error::Usage(format!(
                "--data-dir {}: not a folder",
                crate::text::clean(&dir.display().to_string())
            )))
        };
    }
    if std::path::Path::new(configured).is_dir() {
        return Ok(configured.to_string());
    }
    if let Some(p) = row
        .data_path
        .as_deref()
        .filter(|p| std::path::Path::new(p).is_dir())
    {
        return Ok(p.to_string());
    }
    let here = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Err(Error::Usage(format!(
        "run {} ({}): its data folder `{}` is not there from the working directory {}{}; run verify \
         where the run was trained, or pass --data-dir <folder holding the same data> (its hash is \
         checked against the stored one)",
        row.id,
        crate::text::clean(&row.name),
        crate::text::clean(configured),
        crate::text::clean(&here),
        match &row.data_path {
            Some(p) => format!(", nor at {}, where it was trained", crate::text::clean(p)),
            None => String::new(),
        }
    )))
}
