//! Early stopping: end a run once its validation metric has stopped improving.
//!
//! After each epoch e the monitored metric v_e (`train.monitor`: val_acc by default, or val_loss) is
//! compared with the best so far: it improves when v_e > best + min_delta (an accuracy) or
//! v_e < best - min_delta (a loss); then best = v_e and the wait restarts, else the wait grows by one, and
//! the run ends after the epoch whose wait reaches `patience`. With `restore_best` its final weights are
//! those of the best epoch. The counters and the best weights are part of each checkpoint (tensors
//! `early_stop` and `best.weight` / `best.bias` beside the optimizer's), so a resumed run stops where the
//! uninterrupted one does.

use crate::core::config::RunConfig;
use crate::core::model::{Snapshot, Tensor};
use crate::core::search::Metric;

/// The name of the counters' tensor in a checkpoint's state: [best, best epoch, wait] as three f64.
pub const COUNTERS: &str = "early_stop";

/// The early stopping of one run.
#[derive(Debug, Clone)]
pub struct EarlyStop {
    metric: Metric,
    patience: usize,
    min_delta: f64,
    restore_best: bool,
    /// The best value so far, and its epoch (none before the first epoch).
    best: Option<(f64, usize)>,
    /// Epochs since the best.
    wait: usize,
    /// With `restore_best`: the parameters at the best epoch.
    best_params: Option<Snapshot>,
}

impl EarlyStop {
    /// The early stopping `cfg` asks for (`train.patience` > 0), if any.
    pub fn new(cfg: &RunConfig) -> Option<Self> {
        let t = &cfg.train;
        (t.patience > 0).then_some(EarlyStop {
            metric: t.monitor,
            patience: t.patience,
            min_delta: t.min_delta,
            restore_best: t.restore_best,
            best: None,
            wait: 0,
            best_params: None,
        })
    }

    /// Take epoch `epoch`'s validation loss and accuracy (and, lazily, its parameters); `Some(reason)`
    /// when the run ends here.
    pub fn observe(
        &mut self,
        epoch: usize,
        (val_loss, val_acc): (Option<f64>, Option<f64>),
        params: impl FnOnce() -> Snapshot,
    ) -> Option<String> {
        let v = match self.metric {
            Metric::ValLoss => val_loss,
            _ => val_acc,
        }?;
        let improved = match self.best {
            None => true,
            Some((b, _)) if self.metric.higher_is_better() => v > b + self.min_delta,
            Some((b, _)) => v < b - self.min_delta,
        };
        if improved {
            self.best = Some((v, epoch));
            self.wait = 0;
            if self.restore_best {
                self.best_params = Some(params());
            }
            return None;
        }
        self.wait += 1;
        if self.wait < self.patience {
            return None;
        }
        let (b, e) = self.best.unwrap_or((v, epoch));
        Some(format!(
            "early stopping: {} did not improve by more than {} for {} epoch{} (best {b} at epoch {e}){}",
            self.metric.as_str(),
            self.min_delta,
            self.patience,
            if self.patience == 1 { "" } else { "s" },
            if self.restore_best {
                "; the final weights are that epoch's"
            } else {
                ""
            }
        ))
    }

    /// The parameters to end with: the best epoch's with `restore_best`, else `last`.
    pub fn final_params(&self, last: Snapshot) -> Snapshot {
        match &self.best_params {
            Some(best) if self.restore_best => best.clone(),
            _ => last,
        }
    }

    /// The counters and best weights as checkpoint tensors (layer 0 for the counters).
    pub fn tensors(&self) -> Vec<Tensor> {
        let (best, epoch) = self.best.unwrap_or((f64::NAN, 0));
        let data = [best, epoch as f64, self.wait as f64]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut out = vec![Tensor {
            layer: 0,
            param: COUNTERS,
            shape: vec![3],
            data,
        }];
        if let Some(p) = &self.best_params {
            out.extend(p.tensors.iter().map(|t| Tensor {
                param: if t.param == "bias" {
                    "best.bias"
                } else {
                    "best.weight"
                },
                ..t.clone()
            }));
        }
        out
    }

    /// Continue from a checkpoint's tensors (written by [`EarlyStop::tensors`]).
    pub fn restore(&mut self, state: &Snapshot) -> Result<(), String> {
        let counters = state
            .tensors
            .iter()
            .find(|t| t.param == COUNTERS)
            .ok_or("its checkpoint has no early-stopping counters")?;
        let v: Vec<f64> = counters
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let [best, epoch, wait] = v[..] else {
            return Err("its early-stopping counters are not three numbers".into());
        };
        self.best = (epoch >= 1.0).then_some((best, epoch as usize));
        self.wait = wait as usize;
        let best: Vec<Tensor> = state
            .tensors
            .iter()
            .filter(|t| t.param.starts_with("best."))
            .map(|t| Tensor {
                param: if t.param == "best.bias" {
                    "bias"
                } else {
                    "weight"
                },
                ..t.clone()
            })
            .collect();
        self.best_params = (!best.is_empty()).then_some(Snapshot {
            dtype: state.dtype,
            tensors: best,
        });
        if self.restore_best && self.best.is_some() && self.best_params.is_none() {
            return Err("its checkpoint has no weights of the best epoch to restore".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An epoch's (val_loss, val_acc) with this accuracy.
    fn val(val_acc: f64) -> (Option<f64>, Option<f64>) {
        (Some(1.0 - val_acc), Some(val_acc))
    }

    fn stopper(patience: usize, min_delta: f64, monitor: Metric) -> EarlyStop {
        let mut c = RunConfig::default();
        c.train.patience = patience;
        c.train.min_delta = min_delta;
        c.train.monitor = monitor;
        EarlyStop::new(&c).expect("patience > 0")
    }

    fn none() -> Snapshot {
        Snapshot {
            dtype: crate::core::config::Dtype::F32,
            tensors: Vec::new(),
        }
    }

    #[test]
    fn stops_after_patience_epochs_without_an_improvement_above_min_delta() {
        let mut s = stopper(2, 0.01, Metric::ValAcc);
        assert_eq!(s.observe(1, val(0.90), none), None);
        assert_eq!(s.observe(2, val(0.905), none), None); // +0.005: not an improvement
        assert_eq!(s.observe(3, val(0.92), none), None); // +0.02: the wait restarts
        assert_eq!(s.observe(4, val(0.92), none), None);
        let reason = s.observe(5, val(0.91), none).expect("stops at epoch 5");
        assert!(reason.contains("best 0.92 at epoch 3"), "{reason}");
        // A loss improves downwards.
        let mut l = stopper(1, 0.0, Metric::ValLoss);
        assert_eq!(l.observe(1, val(0.5), none), None);
        assert_eq!(l.observe(2, val(0.6), none), None); // val_loss 0.4 < 0.5
        assert!(l.observe(3, val(0.6), none).is_some()); // equal is no improvement
    }

    #[test]
    fn counters_round_trip_through_a_checkpoint() {
        let mut s = stopper(3, 0.0, Metric::ValAcc);
        s.observe(1, val(0.9), none);
        s.observe(2, val(0.8), none);
        let mut t = stopper(3, 0.0, Metric::ValAcc);
        t.restore(&Snapshot {
            dtype: crate::core::config::Dtype::F32,
            tensors: s.tensors(),
        })
        .expect("restores");
        assert_eq!((t.best, t.wait), (Some((0.9, 1)), 1));
        assert_eq!(t.observe(3, val(0.8), none), None);
        assert!(t.observe(4, val(0.8), none).is_some());
    }
}
