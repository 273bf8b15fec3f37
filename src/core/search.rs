//! Adaptive search as pure functions: the rung schedules of successive halving and of Hyperband (Li et
//! al., "Hyperband: A Novel Bandit-Based Approach to Hyperparameter Optimization", JMLR 18, 2018), and the
//! decision of one rung: which of its runs are promoted, from their metrics at the rung's epochs alone.
//!
//! Nothing here depends on time, order of arrival or the number of workers: a decision is a function of
//! the rung's members and their stored metrics, so every process that makes it makes the same one.
//! Imports nothing above `core`; no SQL.

use serde::{Deserialize, Serialize};

/// The metric a search ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Validation accuracy (needs `data.validation`): the default.
    #[default]
    ValAcc,
    ValLoss,
    TestAcc,
    TestLoss,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::ValAcc,
        Metric::ValLoss,
        Metric::TestAcc,
        Metric::TestLoss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ValAcc => "val_acc",
            Metric::ValLoss => "val_loss",
            Metric::TestAcc => "test_acc",
            Metric::TestLoss => "test_loss",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Accuracy: higher is better; loss: lower.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::ValAcc | Metric::TestAcc)
    }

    /// The other metric of the same split: what breaks a tie.
    pub fn partner(self) -> Metric {
        match self {
            Metric::ValAcc => Metric::ValLoss,
            Metric::ValLoss => Metric::ValAcc,
            Metric::TestAcc => Metric::TestLoss,
            Metric::TestLoss => Metric::TestAcc,
        }
    }

    /// Does it need a validation split?
    pub fn needs_validation(self) -> bool {
        matches!(self, Metric::ValAcc | Metric::ValLoss)
    }
}

/// How the candidates are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Successive halving: every candidate at the first rung, the best 1/eta of each rung to the next.
    Halving,
    /// Hyperband: several brackets of successive halving, from many candidates with few epochs to few
    /// candidates with all of them.
    Hyperband,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Halving => "halving",
            Method::Hyperband => "hyperband",
        }
    }
}

/// One rung of a bracket: how many runs it starts with (as planned) and the epochs each has there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub runs: usize,
    pub epochs: usize,
}

/// The rungs of successive halving over `n` candidates: the first at `min_epochs`, each next one eta
/// times as many epochs with floor(n / eta) (at least one) of the runs, the last at `max_epochs`. When one
/// run is left it goes straight to `max_epochs`.
pub fn halving_rungs(n: usize, min_epochs: usize, max_epochs: usize, eta: usize) -> Vec<Rung> {
    let mut rungs = vec![Rung {
        runs: n,
        epochs: min_epochs.min(max_epochs),
    }];
    while let Some(last) = rungs.last().copied() {
        if last.epochs >= max_epochs {
            break;
        }
        let runs = (last.runs / eta).max(1);
        let epochs = if runs == 1 {
            max_epochs
        } else {
            last.epochs.saturating_mul(eta).min(max_epochs)
        };
        rungs.push(Rung { runs, epochs });
    }
    rungs
}

/// Hyperband's brackets, in units of `min_epochs`: with R = floor(max_epochs / min_epochs) and
/// s_max = floor(log_eta R), bracket s (s_max down to 0) starts n = ceil((s_max + 1) / (s + 1) * eta^s)
/// candidates at R eta^-s units and halves them s times up to R; the last rung of every bracket is at
/// `max_epochs`. Returned in the paper's order (the most exploratory bracket first).
pub fn hyperband_brackets(min_epochs: usize, max_epochs: usize, eta: usize) -> Vec<Vec<Rung>> {
    let r_units = (max_epochs / min_epochs.max(1)).max(1);
    let mut s_max = 0usize;
    while (eta as u128).pow(s_max as u32 + 1) <= r_units as u128 {
        s_max += 1;
    }
    (0..=s_max)
        .rev()
        .map(|s| {
            let eta_s = (eta as u128).pow(s as u32);
            // ceil((s_max + 1) * eta^s / (s + 1)), in integers.
            let n = (((s_max as u128 + 1) * eta_s).div_ceil(s as u128 + 1)) as usize;
            (0..=s)
                .map(|i| {
                    let runs = (n as u128 / (eta as u128).pow(i as u32)) as usize;
                    // r_i = R eta^(i - s) units, rounded down, at least one unit; the last rung is R.
                    let units = if i == s {
                        r_units
                    } else {
                        ((r_units as u128 * (eta as u128).pow(i as u32)) / eta_s).max(1) as usize
                    };
                    let epochs = if i == s {
                        max_epochs
                    } else {
                        units * min_epochs
                    };
                    Rung {
                        runs: runs.max(1),
                        epochs,
                    }
                })
                .collect::<Vec<_>>()
        })
        .map(|rungs| dedup_rungs(rungs, max_epochs))
        .collect()
}

/// Rungs whose epochs do not increase (rounding to whole epochs) are merged into the later one.
fn dedup_rungs(rungs: Vec<Rung>, max_epochs: usize) -> Vec<Rung> {
    let mut out: Vec<Rung> = Vec::with_capacity(rungs.len());
    for r in rungs {
        if let Some(last) = out.last_mut()
            && r.epochs <= last.epochs
        {
            last.epochs = r.epochs.min(max_epochs);
            continue;
        }
        out.push(r);
    }
    out
}

/// Total epochs a schedule trains when every rung is full (a promoted run continues; it does not
/// start again).
pub fn planned_epochs(brackets: &[Vec<Rung>]) -> usize {
    brackets
        .iter()
        .map(|rungs| {
            let mut before = 0;
            let mut total = 0;
            for r in rungs {
                total += r.runs * (r.epochs - before);
                before = r.epochs;
            }
            total
        })
        .sum()
}

/// A search as a spec sets it: its keys, and for each bracket its rungs and the config hashes of the
/// candidates it starts with. Hashed (see [`Plan::hash`]) into the id under which its decisions are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub method: Method,
    pub eta: usize,
    pub min_epochs: usize,
    pub max_epochs: usize,
    pub metric: Metric,
    pub brackets: Vec<Bracket>,
}

/// One bracket: its rungs (the first with every candidate) and its candidates, by config hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Bracket {
    pub rungs: Vec<Rung>,
    pub members: Vec<String>,
}

impl Plan {
    /// A plan over these brackets of candidates; each bracket's rungs keep floor(n / eta) of the runs
    /// before them (at least one), at the epochs `epochs[b]` gives for bracket b.
    pub fn new(
        method: Method,
        eta: usize,
        min_epochs: usize,
        max_epochs: usize,
        metric: Metric,
        brackets: Vec<(Vec<usize>, Vec<String>)>,
    ) -> Plan {
        let brackets = brackets
            .into_iter()
            .map(|(epochs, members)| {
                let mut runs = members.len();
                let rungs = epochs
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        if i > 0 {
                            runs = (runs / eta).max(1);
                        }
                        Rung { runs, epochs: e }
                    })
                    .collect();
                Bracket { rungs, members }
            })
            .collect();
        Plan {
            method,
            eta,
            min_epochs,
            max_epochs,
            metric,
            brackets,
        }
    }

    /// SHA-256 of what the decisions depend on: method, eta, metric, and per bracket the rungs' epochs and
    /// the candidates' config hashes in order.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let value = serde_json::json!({
            "method": self.method.as_str(),
            "eta": self.eta,
            "metric": self.metric.as_str(),
            "brackets": self.brackets.iter().map(|b| serde_json::json!({
                "epochs": b.rungs.iter().map(|r| r.epochs).collect::<Vec<_>>(),
                "members": b.members,
            })).collect::<Vec<_>>(),
        });
        crate::text::hex(&Sha256::digest(value.to_string().as_bytes()))
    }

    /// Epochs trained if every rung is full, against every candidate trained to `max_epochs`.
    pub fn epochs(&self) -> (usize, usize) {
        let rungs: Vec<Vec<Rung>> = self.brackets.iter().map(|b| b.rungs.clone()).collect();
        let candidates: std::collections::BTreeSet<&String> =
            self.brackets.iter().flat_map(|b| &b.members).collect();
        (planned_epochs(&rungs), candidates.len() * self.max_epochs)
    }

    /// The schedule as stored: per bracket, the epochs of each rung.
    pub fn schedule_json(&self) -> String {
        serde_json::Value::from(
            self.brackets
                .iter()
                .map(|b| b.rungs.iter().map(|r| r.epochs).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        )
        .to_string()
    }
}

/// One run of a rung as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub config_hash: String,
    /// The ranking metric and its partner at the rung's epochs; `None` for a run that cannot be
    /// promoted (diverged, failed, gone).
    pub scores: Option<(f64, f64)>,
}

/// The decision of one rung: each member's place (1 = best) and whether it is promoted. The top
/// floor(n / eta) (at least one, never a run without scores) by `metric` are promoted, ties broken by the
/// partner metric and then by config hash (ascending). Members without scores come last, by config hash.
pub fn decide(members: &[Member], metric: Metric, eta: usize) -> Vec<(usize, bool)> {
    let better = |a: f64, b: f64, higher: bool| {
        if higher {
            b.total_cmp(&a)
        } else {
            a.total_cmp(&b)
        }
    };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (&members[i], &members[j]);
        match (a.scores, b.scores) {
            (Some(x), Some(y)) => better(x.0, y.0, metric.higher_is_better())
                .then(better(x.1, y.1, metric.partner().higher_is_better()))
                .then(a.config_hash.cmp(&b.config_hash)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.config_hash.cmp(&b.config_hash),
        }
    });
    let keep = (members.len() / eta.max(1)).max(1);
    let mut out = vec![(0, false); members.len()];
    for (place, &i) in order.iter().enumerate() {
        out[i] = (place + 1, place < keep && members[i].scores.is_some());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(hash: &str, scores: Option<(f64, f64)>) -> Member {
        Member {
            config_hash: hash.into(),
            scores,
        }
    }

    #[test]
    fn halving_keeps_a_third_and_ends_at_the_most_epochs() {
        let r = |runs, epochs| Rung { runs, epochs };
        assert_eq!(
            halving_rungs(27, 1, 27, 3),
            [r(27, 1), r(9, 3), r(3, 9), r(1, 27)]
        );
        assert_eq!(halving_rungs(27, 1, 9, 3), [r(27, 1), r(9, 3), r(3, 9)]);
        assert_eq!(halving_rungs(9, 1, 10, 3), [r(9, 1), r(3, 3), r(1, 10)]);
        assert_eq!(halving_rungs(9, 1, 2, 3), [r(9, 1), r(3, 2)]);
        assert_eq!(halving_rungs(4, 3, 3, 2), [r(4, 3)]);
        // 9 + 3 * 2 + 1 * 7 epochs, against 9 * 10 for the full grid.
        assert_eq!(planned_epochs(&[halving_rungs(9, 1, 10, 3)]), 22);
    }

    #[test]
    fn hyperband_brackets_are_those_of_the_paper() {
        // Li et al., Table 1 (R = 81, eta = 3): n_i and r_i of each bracket s = 4..0.
        let b = hyperband_brackets(1, 81, 3);
        let shape: Vec<Vec<(usize, usize)>> = b
            .iter()
            .map(|rungs| rungs.iter().map(|r| (r.runs, r.epochs)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
                vec![(34, 3), (11, 9), (3, 27), (1, 81)],
                vec![(15, 9), (5, 27), (1, 81)],
                vec![(8, 27), (2, 81)],
                vec![(5, 81)],
            ]
        );
        // In units of min_epochs: R = 9 units of 2 epochs.
        let b = hyperband_brackets(2, 18, 3);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0][0], Rung { runs: 9, epochs: 2 });
        assert_eq!(
            b[2],
            vec![Rung {
                runs: 3,
                epochs: 18
            }]
        );
    }

    #[test]
    fn a_rung_promotes_the_best_third_ties_broken_by_the_partner_then_the_hash() {
        let m = [
            member("c", Some((0.9, 0.30))),
            member("a", Some((0.9, 0.30))),
            member("b", Some((0.9, 0.20))),
            member("d", Some((0.5, 0.10))),
            member("e", None),
            member("f", Some((0.7, 0.10))),
        ];
        let d = decide(&m, Metric::ValAcc, 3);
        // b has the lower loss at the same accuracy; a and c tie on both and go by hash.
        assert_eq!(
            d,
            vec![
                (3, false),
                (2, true),
                (1, true),
                (5, false),
                (6, false),
                (4, false)
            ]
        );
        // By loss (scores are (loss, accuracy) then), lower first; at the same loss, higher accuracy.
        let by_loss: Vec<Member> = m
            .iter()
            .map(|x| member(&x.config_hash, x.scores.map(|(acc, loss)| (loss, acc))))
            .collect();
        let d = decide(&by_loss, Metric::ValLoss, 3);
        assert_eq!(d[5], (1, true), "f: loss 0.10, accuracy 0.7");
        assert_eq!(d[3], (2, true), "d: loss 0.10, accuracy 0.5");
        assert_eq!(d[2], (3, false));
    }

    #[test]
    fn a_run_without_scores_is_never_promoted() {
        let m = [member("a", None), member("b", None)];
        assert_eq!(decide(&m, Metric::TestAcc, 3), vec![(1, false), (2, false)]);
        let m = [member("a", None), member("b", Some((0.1, 2.0)))];
        assert_eq!(decide(&m, Metric::TestAcc, 3), vec![(2, false), (1, true)]);
    }
}
