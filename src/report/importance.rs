//! Which parameters matter: the main effects of a functional ANOVA of the selection metric over an
//! experiment's configurations (Hooker 2007; as in Hutter, Hoos and Leyton-Brown, "An Efficient Approach
//! for Assessing Hyperparameter Importance", ICML 2014, here computed exactly on the observed grid instead
//! of a random forest's predictions).
//!
//! The metric of each configuration is its mean over seeds, y_c. With m the mean of y_c over the C
//! configurations, the variance to explain is V = (1/C) sum_c (y_c - m)^2. Parameter p's main effect at
//! value v is f_p(v) = mean of y_c over the configurations with p = v, minus m; its variance is
//! V_p = (1/C) sum_c f_p(v_c)^2, and its importance the share V_p / V. On a full grid the main effects
//! are orthogonal: the shares and the interactions' share, 1 - sum_p V_p / V, add up to 1. On a random
//! search a parameter with more than [`MAX_LEVELS`] values is binned by rank into that many bins of equal
//! counts, and the shares are an approximation (the configurations are not a grid).
//!
//! Deterministic: configurations and values are ordered by their JSON text, sums taken in that order.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

/// The most distinct values a parameter keeps; more are binned by rank.
pub const MAX_LEVELS: usize = 6;

/// How the shares are computed, in a sentence for beside them.
pub const METHOD: &str = "functional ANOVA (Hooker 2007; Hutter et al. 2014): the variance of each \
parameter's main effect over the configurations' mean metric, as a share of the metric's variance; \
exact on a full grid; a parameter with more than 6 values (a random search) is binned by rank";

/// One parameter's share of the variance.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub param: String,
    pub share: f64,
    /// Its distinct values (or bins).
    pub levels: usize,
}

/// The main effects of `params` on the metric, from (parameter values, metric value) per run (seeds of
/// one configuration averaged), largest share first; and the interactions' share (what is left). `None`
/// with fewer than two configurations or a metric that does not vary.
pub fn fanova(
    runs: &[(BTreeMap<String, Json>, f64)],
    params: &[String],
) -> Option<(Vec<Importance>, f64)> {
    // y_c: the mean over seeds of each configuration (its values of `params`).
    let mut configs: BTreeMap<Vec<String>, (Vec<Json>, f64, usize)> = BTreeMap::new();
    for (values, y) in runs.iter().filter(|(_, y)| y.is_finite()) {
        let v: Vec<Json> = params
            .iter()
            .map(|p| values.get(p).cloned().unwrap_or(Json::Null))
            .collect();
        let key = v.iter().map(Json::to_string).collect();
        let e = configs.entry(key).or_insert((v, 0.0, 0));
        e.1 += y;
        e.2 += 1;
    }
    let ys: Vec<(Vec<Json>, f64)> = configs
        .into_values()
        .map(|(v, sum, n)| (v, sum / n as f64))
        .collect();
    let c = ys.len() as f64;
    if ys.len() < 2 {
        return None;
    }
    let m = ys.iter().map(|(_, y)| y).sum::<f64>() / c;
    let var = ys.iter().map(|(_, y)| (y - m) * (y - m)).sum::<f64>() / c;
    if var.is_nan() || var <= 0.0 {
        return None;
    }
    let mut out = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let level = levels(&ys.iter().map(|(v, _)| v[i].clone()).collect::<Vec<_>>());
        let mut sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
        for ((_, y), l) in ys.iter().zip(&level) {
            let e = sums.entry(*l).or_default();
            e.0 += y;
            e.1 += 1;
        }
        let vp = sums
            .values()
            .map(|(s, n)| {
                let f = s / *n as f64 - m;
                *n as f64 * f * f
            })
            .sum::<f64>()
            / c;
        out.push(Importance {
            param: p.clone(),
            share: vp / var,
            levels: sums.len(),
        });
    }
    let rest = 1.0 - out.iter().map(|x| x.share).sum::<f64>();
    out.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.param.cmp(&b.param)));
    Some((out, rest))
}

/// Each value's level: its rank among the distinct values, or with more than [`MAX_LEVELS`] numbers,
/// its bin of equal counts by rank.
fn levels(values: &[Json]) -> Vec<usize> {
    let mut distinct: Vec<&Json> = Vec::new();
    for v in values {
        if !distinct.contains(&v) {
            distinct.push(v);
        }
    }
    let numeric = values.iter().all(Json::is_number);
    if numeric {
        distinct.sort_by(|a, b| {
            a.as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b.as_f64().unwrap_or(0.0))
        });
    } else {
        distinct.sort_by_key(|v| v.to_string());
    }
    let rank = |v: &Json| distinct.iter().position(|d| *d == v).unwrap_or(0);
    if !numeric || distinct.len() <= MAX_LEVELS {
        return values.iter().map(rank).collect();
    }
    // Bins of (nearly) equal counts by rank over the values themselves (ties stay together).
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| rank(&values[i]));
    let mut bin = vec![0; values.len()];
    for (pos, &i) in order.iter().enumerate() {
        bin[i] = pos * MAX_LEVELS / values.len();
    }
    // Equal values in one bin: the bin of the first of them.
    for (pos, &i) in order.iter().enumerate().skip(1) {
        let prev = order[pos - 1];
        if rank(&values[i]) == rank(&values[prev]) {
            bin[i] = bin[prev];
        }
    }
    bin
}

/// The shares as JSON for the dashboard: `{method, params: [{param, share, levels}], interactions}`, or
/// the reason there are none.
pub fn json(runs: &[(BTreeMap<String, Json>, f64)], params: &[String]) -> Json {
    match fanova(runs, params) {
        None => json!({
            "method": METHOD,
            "params": [],
            "note": "needs two or more configurations whose metric differs",
        }),
        Some((shares, rest)) => json!({
            "method": METHOD,
            "params": shares
                .iter()
                .map(|s| json!({"param": s.param, "share": s.share, "levels": s.levels}))
                .collect::<Vec<_>>(),
            "interactions": rest.max(0.0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(f: impl Fn(f64, f64) -> f64) -> Vec<(BTreeMap<String, Json>, f64)> {
        let mut runs = Vec::new();
        for a in [0.0, 1.0, 2.0] {
            for b in ["x", "y"] {
                for seed in [1, 2] {
                    let bv = if b == "x" { 0.0 } else { 1.0 };
                    let mut m = BTreeMap::new();
                    m.insert("a".to_string(), json!(a));
                    m.insert("b".to_string(), json!(b));
                    // Seeds add noise that cancels in the configuration's mean.
                    runs.push((m, f(a, bv) + if seed == 1 { 0.5 } else { -0.5 }));
                }
            }
        }
        runs
    }

    #[test]
    fn additive_effects_share_the_variance_by_their_own_variance() {
        // y = a + 3 b: Var(a) over {0,1,2} = 2/3, Var(3b) over {0,1} = 9/4; no interaction.
        let (s, rest) = fanova(&grid(|a, b| a + 3.0 * b), &["a".into(), "b".into()]).unwrap();
        let total = 2.0 / 3.0 + 9.0 / 4.0;
        assert_eq!(s[0].param, "b");
        assert!((s[0].share - 9.0 / 4.0 / total).abs() < 1e-12, "{s:?}");
        assert!((s[1].share - 2.0 / 3.0 / total).abs() < 1e-12, "{s:?}");
        assert!(rest.abs() < 1e-12);
        assert_eq!((s[0].levels, s[1].levels), (2, 3));
    }

    #[test]
    fn a_pure_interaction_has_no_main_effect() {
        // y = (a - 1) * (2 b - 1): every marginal mean is 0.
        let (s, rest) = fanova(
            &grid(|a, b| (a - 1.0) * (2.0 * b - 1.0)),
            &["a".into(), "b".into()],
        )
        .unwrap();
        assert!(s.iter().all(|x| x.share.abs() < 1e-12), "{s:?}");
        assert!((rest - 1.0).abs() < 1e-12);
        assert!(fanova(&grid(|_, _| 1.0), &["a".into()]).is_none());
    }

    #[test]
    fn many_numeric_values_are_binned_by_rank() {
        let vals: Vec<Json> = (0..12).map(|i| json!(i as f64 * 0.1)).collect();
        let l = levels(&vals);
        assert_eq!(*l.iter().max().unwrap(), MAX_LEVELS - 1);
        assert!(l.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(levels(&[json!("b"), json!("a"), json!("b")]), vec![1, 0, 1]);
    }
}
