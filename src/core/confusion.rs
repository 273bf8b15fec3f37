//! Where a model errs: the confusion matrix of a split (how many samples of each true class the model
//! gives each class) and the test samples it gets wrong, from the predictions of a run's final weights.
//!
//! Computed once, when a run completes ([`crate::core::train`]); the store keeps it beside the run. The
//! diagonal over the total is the accuracy the run reports for that split (the same argmax, the first of
//! equal outputs). Imports nothing above `core`.

use crate::core::data::SplitRef;
use crate::core::model::Mlp;
use crate::core::real::Real;
use crate::core::workspace::{Prediction, Workspace, predict};

/// Counts of (true class, predicted class) over one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    /// The number of classes: the output layer's width.
    pub classes: usize,
    /// Row-major `[actual][predicted]`.
    pub counts: Vec<u64>,
}

impl Confusion {
    /// The matrix of `predictions` against `labels` (the same length).
    pub fn of(classes: usize, labels: &[u8], predictions: &[Prediction]) -> Self {
        let mut counts = vec![0u64; classes * classes];
        for (&y, p) in labels.iter().zip(predictions) {
            let (y, c) = (y as usize, p.class as usize);
            if y < classes && c < classes {
                counts[y * classes + c] += 1;
            }
        }
        Confusion { classes, counts }
    }

    pub fn count(&self, actual: usize, predicted: usize) -> u64 {
        self.counts[actual * self.classes + predicted]
    }

    /// Samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples on the diagonal.
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|k| self.count(k, k)).sum()
    }

    /// Per true class: the fraction predicted as itself (`None` for a class with no samples).
    pub fn class_accuracy(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|k| {
                let n: u64 = (0..self.classes).map(|p| self.count(k, p)).sum();
                (n > 0).then(|| self.count(k, k) as f64 / n as f64)
            })
            .collect()
    }
}

/// A test sample the model gets wrong: its index in the test split (file order), its label, the class
/// predicted and that class's probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Miss {
    pub sample: usize,
    pub actual: u8,
    pub predicted: u8,
    pub confidence: f64,
}

/// Where a run's final weights err: on the test split (with every sample they get wrong) and on the
/// validation split when the run holds one out.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors {
    pub test: Confusion,
    pub validation: Option<Confusion>,
    pub misclassified: Vec<Miss>,
}

/// The errors of `model` on `test` (and `validation`), forward passes in `ws`.
pub fn errors<F: Real>(
    model: &Mlp<F>,
    test: SplitRef<'_>,
    validation: Option<SplitRef<'_>>,
    ws: &mut Workspace<F>,
) -> Errors {
    let classes = model.sizes().last().copied().unwrap_or(0);
    let predictions = predict(model, test, ws);
    let misclassified = test
        .labels
        .iter()
        .zip(&predictions)
        .enumerate()
        .filter(|(_, (y, p))| **y != p.class)
        .map(|(sample, (&actual, p))| Miss {
            sample,
            actual,
            predicted: p.class,
            confidence: p.confidence,
        })
        .collect();
    let validation = validation.map(|v| Confusion::of(classes, v.labels, &predict(model, v, ws)));
    Errors {
        test: Confusion::of(classes, test.labels, &predictions),
        validation,
        misclassified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_by_label_and_columns_by_prediction() {
        let p = |class| Prediction {
            class,
            confidence: 0.5,
        };
        let c = Confusion::of(
            3,
            &[0, 0, 1, 2, 2, 2],
            &[p(0), p(1), p(1), p(2), p(0), p(2)],
        );
        assert_eq!(c.counts, vec![1, 1, 0, 0, 1, 0, 1, 0, 2]);
        assert_eq!((c.total(), c.correct()), (6, 4));
        assert_eq!(
            c.class_accuracy(),
            vec![Some(0.5), Some(1.0), Some(2.0 / 3.0)]
        );
        let empty = Confusion::of(2, &[0], &[p(0)]);
        assert_eq!(empty.class_accuracy(), vec![Some(1.0), None]);
    }
}
