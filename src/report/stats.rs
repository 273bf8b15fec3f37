//! Statistics over seeds: the mean with its 95% confidence interval (Student t), and the comparison of two
//! configurations, paired over the seeds they share (paired t-test) or, when they share fewer than two,
//! unpaired (Welch's t-test), with a verdict in plain words.
//!
//! Student's t distribution is computed here (its CDF through the regularised incomplete beta function,
//! its quantiles by bisection on the CDF), so the numbers depend on no other crate; the unit tests check
//! them against SciPy.

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let nonzero = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / nonzero(1.0 - qab * x / qap);
    let mut h = d;
    // One Lentz step with numerator `aa`: updates d and c, returns the factor for h.
    let step = |aa: f64, c: &mut f64, d: &mut f64| {
        *d = 1.0 / nonzero(1.0 + aa * *d);
        *c = nonzero(1.0 + aa / *c);
        *d * *c
    };
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)), &mut c, &mut d);
        let del = step(
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            &mut c,
            &mut d,
        );
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function I_x(a, b).
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// P(T <= t) for Student's t with `df` degrees of freedom (df > 0, not necessarily whole).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    let tail = 0.5 * beta_inc(df / 2.0, 0.5, df / (df + t * t));
    if t > 0.0 { 1.0 - tail } else { tail }
}

/// The p-quantile of Student's t with `df` degrees of freedom (0 < p < 1).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    // Bracket, then bisect: the CDF is increasing; 200 halvings reach the last bit.
    let (mut lo, mut hi) = (-1.0, 1.0);
    while t_cdf(lo, df) > p {
        lo *= 2.0;
    }
    while t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Mean and sample standard deviation (n - 1) of `xs`; the deviation is `None` for fewer than two values.
pub fn mean_std(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// The 95% confidence interval of the mean of `xs` (Student t, n - 1 degrees of freedom), for n >= 2.
pub fn ci95(xs: &[f64]) -> Option<(f64, f64)> {
    let (mean, sd) = mean_std(xs);
    let sd = sd?;
    let half = t_quantile(0.975, xs.len() as f64 - 1.0) * sd / (xs.len() as f64).sqrt();
    Some((mean - half, mean + half))
}

/// A comparison of a configuration against a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// "paired" (over `n` shared seeds) or "Welch" (unpaired).
    pub test: &'static str,
    /// Seeds shared (paired), or the two sample sizes (Welch).
    pub n: (usize, usize),
    /// Mean difference (configuration minus baseline), and its 95% confidence interval.
    pub diff: f64,
    pub ci: (f64, f64),
    /// Two-sided p-value.
    pub p: f64,
}

/// Paired t-test of `a - b` over pairs of values.
pub fn paired(a: &[f64], b: &[f64]) -> Option<Comparison> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (mean, sd) = mean_std(&d);
    let sd = sd?;
    let n = d.len() as f64;
    let df = n - 1.0;
    let se = sd / n.sqrt();
    let (p, half) = if se == 0.0 {
        // Every pair differs by the same amount: no spread to test against.
        (if mean == 0.0 { 1.0 } else { 0.0 }, 0.0)
    } else {
        let t = mean / se;
        (2.0 * t_cdf(-t.abs(), df), t_quantile(0.975, df) * se)
    };
    Some(Comparison {
        test: "paired",
        n: (d.len(), d.len()),
        diff: mean,
        ci: (mean - half, mean + half),
        p,
    })
}

/// Welch's unequal-variance t-test of mean(a) - mean(b).
pub fn welch(a: &[f64], b: &[f64]) -> Option<Comparison> {
    let ((ma, sa), (mb, sb)) = (mean_std(a), mean_std(b));
    let (sa, sb) = (sa?, sb?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (sa * sa / na, sb * sb / nb);
    let se = (va + vb).sqrt();
    let diff = ma - mb;
    let (p, half) = if se == 0.0 {
        (if diff == 0.0 { 1.0 } else { 0.0 }, 0.0)
    } else {
        let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
        let t = diff / se;
        (2.0 * t_cdf(-t.abs(), df), t_quantile(0.975, df) * se)
    };
    Some(Comparison {
        test: "Welch",
        n: (a.len(), b.len()),
        diff,
        ci: (diff - half, diff + half),
        p,
    })
}

impl Comparison {
    /// "better: +0.31 points, 95% CI [0.12, 0.50], p = 0.01, 5 paired seeds" (accuracies in points, i.e.
    /// percentage points): better or worse when the interval excludes zero, "no clear difference" otherwise.
    pub fn verdict(&self) -> String {
        let pts = |x: f64| 100.0 * x;
        let word = if self.ci.0 > 0.0 {
            "better"
        } else if self.ci.1 < 0.0 {
            "worse"
        } else {
            "no clear difference"
        };
        let sample = match self.test {
            "paired" => format!("{} paired seeds", self.n.0),
            _ => format!("Welch's test, {} and {} seeds", self.n.0, self.n.1),
        };
        let p = if self.p < 0.001 {
            "p < 0.001".to_string()
        } else {
            format!("p = {:.3}", self.p)
        };
        format!(
            "{word}: {:+.2} points, 95% CI [{:.2}, {:.2}], {p}, {sample}",
            pts(self.diff),
            pts(self.ci.0),
            pts(self.ci.1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    /// Reference values computed with SciPy 1.17.1 (scipy.stats) on the inputs below: t.ppf, t.cdf,
    /// ttest_rel(a, b) and ttest_ind(a, b[:3], equal_var=False) with their .pvalue and
    /// .confidence_interval(0.95), and mean +- t.ppf(0.975, n - 1) * std(ddof=1) / sqrt(n).
    #[test]
    fn student_t_matches_scipy() {
        for (df, q) in [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749462),
            (4.0, 2.7764451051977934),
            (9.0, 2.262157162798205),
            (29.0, 2.045229642132703),
            (7.5, 2.333039626864974),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, q, 1e-10), "df {df}: {got} vs {q}");
        }
        for (t, df, p) in [
            (-2.0, 3.0, 0.06966298427942152),
            (0.5, 10.0, 0.6860531971285135),
            (3.1, 5.0, 0.9865734079049824),
        ] {
            let got = t_cdf(t, df);
            assert!(close(got, p, 1e-10), "t {t} df {df}: {got} vs {p}");
        }
    }

    #[test]
    fn tests_match_scipy() {
        let a = [0.9791, 0.9800, 0.9787, 0.9795, 0.9802];
        let b = [0.9734, 0.9737, 0.9745, 0.9729, 0.9741];
        let p = paired(&a, &b).unwrap();
        assert!(close(p.diff, 0.005779999999999985, 1e-9), "{p:?}");
        assert!(close(p.p, 0.0001633530747267972, 1e-7), "{p:?}");
        assert!(close(p.ci.0, 0.004610592435164608, 1e-9), "{p:?}");
        assert!(close(p.ci.1, 0.006949407564835362, 1e-9), "{p:?}");
        let w = welch(&a, &b[..3]).unwrap();
        assert!(close(w.p, 7.198396557537509e-05, 1e-6), "{w:?}");
        assert!(close(w.ci.0, 0.004505493943926629, 1e-8), "{w:?}");
        assert!(close(w.ci.1, 0.006761172722739907, 1e-8), "{w:?}");
        let (lo, hi) = ci95(&a).unwrap();
        assert!(
            close(lo, 0.9787295677502158, 1e-12) && close(hi, 0.9802704322497843, 1e-12),
            "{lo} {hi}"
        );
        assert_eq!(
            p.verdict(),
            "better: +0.58 points, 95% CI [0.46, 0.69], p < 0.001, 5 paired seeds"
        );
        let same = paired(&a, &a).unwrap();
        assert_eq!((same.p, same.ci), (1.0, (0.0, 0.0)));
        assert!(same.verdict().starts_with("no clear difference"));
    }
}
