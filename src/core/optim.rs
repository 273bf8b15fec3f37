//! A run's optimizer over its steps: the learning rate of each step (the schedule and its warmup) and
//! the rule of each step ([`Rule`], which `core::kernel::rule` applies), both functions of the 0-based
//! global step index t alone, so that a resumed run, a shard or a verify see the same values.
//!
//! With E steps per epoch and T = epochs * E steps in the run, the rate of step t is
//! lr_t = sched(t) * warm(t), where
//! - constant: sched(t) = lr;
//! - step: lr * gamma^floor(e / step_epochs), e = floor(t / E) the step's 0-based epoch;
//! - exponential: lr * gamma^e;
//! - cosine: min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2;
//! - warm(t) = (t + 1) / W for t < W warmup steps, else 1.
//!
//! Everything here is computed in f64 with basic operations only (+, -, *, /, no `powf`, no libm `cos`),
//! so the rate has the same bits on every platform: gamma^k by repeated squaring ([`powu`]) and the
//! cosine by a fixed polynomial ([`cos_pi`]).

use crate::core::config::{OptimizerKind, OptimizerSpec, RunConfig, Schedule};
use crate::core::kernel::rule::{Rule, RuleElem};
use crate::core::real::Real;

/// The optimizer of one run: its `[optimizer]` section, base rate and the run's length in steps.
#[derive(Debug, Clone)]
pub struct Optimizer {
    spec: OptimizerSpec,
    lr: f64,
    steps_per_epoch: u64,
    total_steps: u64,
}

impl Optimizer {
    /// The optimizer of `cfg`, whose epochs have `steps_per_epoch` steps.
    pub fn new(cfg: &RunConfig, steps_per_epoch: usize) -> Self {
        let steps_per_epoch = steps_per_epoch.max(1) as u64;
        Optimizer {
            spec: cfg.optimizer.clone(),
            lr: cfg.train.learning_rate,
            steps_per_epoch,
            total_steps: steps_per_epoch * cfg.train.epochs.max(1) as u64,
        }
    }

    /// Steps per epoch (E).
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// The names of the state slots each parameter array keeps (empty for plain SGD).
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self.spec.kind {
            OptimizerKind::Sgd if self.spec.momentum > 0.0 => &["velocity"],
            OptimizerKind::Sgd => &[],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["m", "v"],
        }
    }

    /// lr_t, the rate of 0-based step `t` (module doc).
    pub fn learning_rate(&self, t: u64) -> f64 {
        let o = &self.spec;
        let epoch = t / self.steps_per_epoch;
        let sched = match o.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step => self.lr * powu(o.gamma, epoch / o.step_epochs.max(1) as u64),
            Schedule::Exponential => self.lr * powu(o.gamma, epoch),
            Schedule::Cosine => {
                let x = t.min(self.total_steps) as f64 / self.total_steps as f64;
                o.min_lr + (self.lr - o.min_lr) * ((1.0 + cos_pi(x)) / 2.0)
            }
        };
        let w = o.warmup_steps as u64;
        if t < w {
            sched * ((t + 1) as f64 / w as f64)
        } else {
            sched
        }
    }

    /// The rule of 0-based step `t` on a batch of `n` samples, in `T`.
    pub fn rule<T: Real + RuleElem>(&self, t: u64, n: usize) -> Rule<T> {
        let o = &self.spec;
        let lr = self.learning_rate(t);
        let n = n.max(1) as f64;
        if o.is_plain_sgd() {
            // The step of every run before the optimizers: alpha = -lr / n rounded once.
            return Rule::Plain {
                alpha: T::from_f64(-lr / n),
            };
        }
        let (inv_n, neg_lr) = (T::from_f64(1.0 / n), T::from_f64(-lr));
        match o.kind {
            OptimizerKind::Sgd => Rule::Sgd {
                inv_n,
                neg_lr,
                decay: T::from_f64(o.weight_decay),
                momentum: T::from_f64(o.momentum),
                nesterov: o.nesterov,
            },
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let decoupled = o.kind == OptimizerKind::Adamw;
                // Bias corrections of step t + 1 (the paper counts steps from 1).
                let c1 = 1.0 - powu(o.beta1, t + 1);
                let c2 = 1.0 - powu(o.beta2, t + 1);
                Rule::Adam {
                    inv_n,
                    neg_lr,
                    decay: T::from_f64(if decoupled { 0.0 } else { o.weight_decay }),
                    decoupled: T::from_f64(if decoupled { -lr * o.weight_decay } else { 0.0 }),
                    beta1: T::from_f64(o.beta1),
                    one_minus_beta1: T::from_f64(1.0 - o.beta1),
                    beta2: T::from_f64(o.beta2),
                    one_minus_beta2: T::from_f64(1.0 - o.beta2),
                    inv_correction1: T::from_f64(1.0 / c1),
                    inv_correction2: T::from_f64(1.0 / c2),
                    eps: T::from_f64(o.eps),
                }
            }
        }
    }
}

/// x^k by repeated squaring: the same sequence of multiplications on every platform (unlike `powi`,
/// whose implementation is the compiler's choice).
pub fn powu(x: f64, mut k: u64) -> f64 {
    let (mut base, mut acc) = (x, 1.0);
    while k > 0 {
        if k & 1 == 1 {
            acc *= base;
        }
        base *= base;
        k >>= 1;
    }
    acc
}

/// cos(pi x) for x in [0, 1], within a few units in the last place, from basic operations only: for
/// x <= 1/2 the Taylor series of cos(u), u = pi x <= pi / 2, to the u^22 term (the first term left out
/// is below 2e-19); for x > 1/2, -cos(pi (1 - x)) (1 - x is exact there).
pub fn cos_pi(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    if x > 0.5 {
        return -cos_pi(1.0 - x);
    }
    let u = std::f64::consts::PI * x;
    let u2 = u * u;
    // cos u = 1 - u^2/(1*2) (1 - u^2/(3*4) (1 - ... (1 - u^2/(21*22)))), innermost first.
    let mut sum = 1.0;
    for k in (1..=11u32).rev() {
        sum = 1.0 - u2 / f64::from((2 * k - 1) * (2 * k)) * sum;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cos_pi_is_within_a_few_ulp_of_the_platform_cosine() {
        for i in 0..=1000 {
            let x = i as f64 / 1000.0;
            let want = (std::f64::consts::PI * x).cos();
            assert!(
                (cos_pi(x) - want).abs() < 4e-16,
                "x {x}: {} vs {want}",
                cos_pi(x)
            );
        }
        assert_eq!(cos_pi(0.0), 1.0);
        assert_eq!(cos_pi(1.0), -1.0);
        assert!(cos_pi(0.5).abs() < 1e-16);
    }

    #[test]
    fn powu_is_the_power() {
        assert_eq!(powu(0.5, 0), 1.0);
        assert_eq!(powu(0.5, 10), 1.0 / 1024.0);
        assert!((powu(0.999, 1000) / 0.999f64.powi(1000) - 1.0).abs() < 1e-13);
    }

    fn optimizer(edit: impl FnOnce(&mut RunConfig)) -> Optimizer {
        let mut cfg = RunConfig::default();
        cfg.train.learning_rate = 0.1;
        cfg.train.epochs = 4;
        edit(&mut cfg);
        Optimizer::new(&cfg, 10)
    }

    #[test]
    fn schedules_follow_their_definitions() {
        let constant = optimizer(|_| {});
        assert!((0..40).all(|t| constant.learning_rate(t) == 0.1));
        let step = optimizer(|c| {
            c.optimizer.schedule = Schedule::Step;
            c.optimizer.step_epochs = 2;
            c.optimizer.gamma = 0.5;
        });
        assert_eq!(step.learning_rate(19), 0.1);
        assert_eq!(step.learning_rate(20), 0.05);
        assert_eq!(step.learning_rate(39), 0.05);
        let exp = optimizer(|c| {
            c.optimizer.schedule = Schedule::Exponential;
            c.optimizer.gamma = 0.5;
        });
        assert_eq!(exp.learning_rate(9), 0.1);
        assert_eq!(exp.learning_rate(10), 0.05);
        assert_eq!(exp.learning_rate(35), 0.1 * 0.125);
        let cos = optimizer(|c| {
            c.optimizer.schedule = Schedule::Cosine;
            c.optimizer.min_lr = 0.01;
        });
        assert_eq!(cos.learning_rate(0), 0.1);
        assert!((cos.learning_rate(20) - 0.055).abs() < 1e-16);
        assert!((cos.learning_rate(40) - 0.01).abs() < 1e-17);
        assert!((1..40).all(|t| cos.learning_rate(t) < cos.learning_rate(t - 1)));
        let warm = optimizer(|c| {
            c.optimizer.schedule = Schedule::Cosine;
            c.optimizer.min_lr = 0.01;
            c.optimizer.warmup_steps = 4;
        });
        assert_eq!(warm.learning_rate(0), 0.1 * 0.25);
        assert_eq!(warm.learning_rate(3), cos.learning_rate(3) * 1.0);
        assert!((warm.learning_rate(1) - cos.learning_rate(1) * 0.5).abs() < 1e-17);
    }

    #[test]
    fn plain_sgd_keeps_the_step_of_earlier_versions() {
        let o = optimizer(|_| {});
        assert_eq!(
            o.rule::<f32>(0, 10),
            Rule::Plain {
                alpha: (-0.1f64 / 10.0) as f32
            }
        );
        let m = optimizer(|c| c.optimizer.momentum = 0.9);
        assert!(matches!(m.rule::<f64>(0, 10), Rule::Sgd { momentum, .. } if momentum == 0.9));
    }

    #[test]
    fn adam_corrections_count_steps_from_one() {
        let o = optimizer(|c| c.optimizer.kind = OptimizerKind::Adam);
        let Rule::Adam {
            inv_correction1,
            inv_correction2,
            ..
        } = o.rule::<f64>(0, 10)
        else {
            panic!("not adam")
        };
        assert!((inv_correction1 - 10.0).abs() < 1e-12);
        assert!((inv_correction2 - 1000.0).abs() < 1e-9);
    }

    use crate::core::config::{Activation, Init};
    use crate::core::kernel::Kernel;
    use crate::core::kernel::rule::{self, apply_portable};
    use crate::core::model::Mlp;
    use crate::core::reference;
    use crate::core::rng::{Stream, StreamRng};
    use crate::core::workspace::Workspace;
    use ndarray::Array2;

    /// The rules on one weight, against steps worked out by hand.
    #[test]
    fn rules_take_the_steps_worked_out_by_hand() {
        let sgd = |nesterov| Rule::Sgd {
            inv_n: 0.5f64,
            neg_lr: -0.1,
            decay: 0.1,
            momentum: 0.9,
            nesterov,
        };
        // w = 1, S = 2 over n = 2: g = 1 + 0.1 * 1 = 1.1, v = 1.1, d = 1.1 + 0.9 * 1.1 = 2.09.
        let (mut w, mut v) = ([1.0f64], [0.0f64]);
        rule::apply(&sgd(true), &mut w, &[2.0], &mut [&mut v]);
        assert!(
            (w[0] - 0.791).abs() < 1e-15 && (v[0] - 1.1).abs() < 1e-15,
            "{w:?} {v:?}"
        );
        // g = 1 + 0.0791 = 1.0791, v = 0.99 + 1.0791 = 2.0691, d = 1.0791 + 0.9 * 2.0691 = 2.94129.
        rule::apply(&sgd(true), &mut w, &[2.0], &mut [&mut v]);
        assert!((w[0] - 0.496871).abs() < 1e-15, "{w:?}");
        // Heavy ball: the step is v itself.
        let (mut w, mut v) = ([1.0f64], [0.0f64]);
        rule::apply(&sgd(false), &mut w, &[2.0], &mut [&mut v]);
        assert!((w[0] - 0.89).abs() < 1e-15, "{w:?}");
        // Adam, first step (t = 1): m_hat = g and v_hat = g^2, so the step is lr g / (|g| + eps).
        let adam = |decoupled: f64, decay: f64| Rule::Adam {
            inv_n: 0.5f64,
            neg_lr: -0.1,
            decay,
            decoupled,
            beta1: 0.9,
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 1.0 - 0.999,
            inv_correction1: 1.0 / 0.1,
            inv_correction2: 1.0 / (1.0 - 0.999),
            eps: 1e-8,
        };
        let (mut w, mut m, mut v) = ([1.0f64], [0.0f64], [0.0f64]);
        rule::apply(&adam(0.0, 0.0), &mut w, &[-4.0], &mut [&mut m, &mut v]);
        assert!(
            (w[0] - (1.0 + 0.1 * 2.0 / (2.0 + 1e-8))).abs() < 1e-15,
            "{w:?}"
        );
        assert!((m[0] + 0.2).abs() < 1e-15 && (v[0] - 0.004).abs() < 1e-15);
        // AdamW: w shrinks by lr * lambda before the same step: 1 - 0.1 * 0.5 = 0.95.
        let (mut w, mut m, mut v) = ([1.0f64], [0.0f64], [0.0f64]);
        rule::apply(&adam(-0.05, 0.0), &mut w, &[-4.0], &mut [&mut m, &mut v]);
        assert!(
            (w[0] - (0.95 + 0.1 * 2.0 / (2.0 + 1e-8))).abs() < 1e-15,
            "{w:?}"
        );
        // Adam with L2: g = -2 + 0.5 * 1 = -1.5, the first step is still lr sign(g).
        let (mut w, mut m, mut v) = ([1.0f64], [0.0f64], [0.0f64]);
        rule::apply(&adam(0.0, 0.5), &mut w, &[-4.0], &mut [&mut m, &mut v]);
        assert!(
            (w[0] - (1.0 + 0.1 * 1.5 / (1.5 + 1e-8))).abs() < 1e-15,
            "{w:?}"
        );
    }

    fn every_rule() -> Vec<(&'static str, RunConfig)> {
        let mut out = Vec::new();
        let mut add = |name, edit: &dyn Fn(&mut OptimizerSpec)| {
            let mut c = RunConfig::default();
            c.train.learning_rate = 0.05;
            c.train.epochs = 2;
            edit(&mut c.optimizer);
            out.push((name, c));
        };
        add("momentum", &|o| o.momentum = 0.9);
        add("nesterov+decay", &|o| {
            o.momentum = 0.8;
            o.nesterov = true;
            o.weight_decay = 0.01;
        });
        add("decay only, step", &|o| {
            o.weight_decay = 0.05;
            o.schedule = Schedule::Step;
        });
        add("adam+decay, cosine+warmup", &|o| {
            o.kind = OptimizerKind::Adam;
            o.weight_decay = 0.01;
            o.schedule = Schedule::Cosine;
            o.warmup_steps = 3;
        });
        add("adamw, exponential", &|o| {
            o.kind = OptimizerKind::Adamw;
            o.weight_decay = 0.1;
            o.beta1 = 0.8;
            o.schedule = Schedule::Exponential;
            o.gamma = 0.5;
        });
        out
    }

    /// The rules compiled for the CPU's instruction set give the portable loop's bits, in f32 and f64.
    #[test]
    fn compiled_rules_have_the_bits_of_the_portable_loop() {
        let mut rng = StreamRng::new(11, Stream::Shuffle);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        let (w0, s, m0, v0) = (draw(1003), draw(1003), draw(1003), draw(1003));
        let v0: Vec<f64> = v0.iter().map(|x| x * x).collect();
        for (name, cfg) in every_rule() {
            let o = Optimizer::new(&cfg, 5);
            for t in [0, 4, 7] {
                macro_rules! check {
                    ($t:ty) => {{
                        let cast = |x: &[f64]| x.iter().map(|&v| v as $t).collect::<Vec<$t>>();
                        let rule = o.rule::<$t>(t, 7);
                        let (mut wa, mut ma, mut va) = (cast(&w0), cast(&m0), cast(&v0));
                        let (mut wb, mut mb, mut vb) = (wa.clone(), ma.clone(), va.clone());
                        rule::apply(&rule, &mut wa, &cast(&s), &mut [&mut ma, &mut va]);
                        apply_portable(&rule, &mut wb, &cast(&s), &mut [&mut mb, &mut vb]);
                        let bits =
                            |x: &[$t]| x.iter().map(|v| v.to_bits() as u64).collect::<Vec<_>>();
                        assert_eq!(bits(&wa), bits(&wb), "{name} t {t}");
                        assert_eq!(bits(&ma), bits(&mb), "{name} t {t}");
                        assert_eq!(bits(&va), bits(&vb), "{name} t {t}");
                    }};
                }
                check!(f32);
                check!(f64);
            }
        }
    }

    fn batches(seed: u64, count: usize, n: usize) -> Vec<(Array2<f64>, Vec<u8>)> {
        let mut r = StreamRng::new(seed, Stream::Shuffle);
        (0..count)
            .map(|_| {
                let x = Array2::from_shape_simple_fn((n, 12), || r.uniform());
                let y = (0..n).map(|_| r.below(4) as u8).collect();
                (x, y)
            })
            .collect()
    }

    /// A snapshot's values rounded to f32.
    fn to_f32(s: &crate::core::model::Snapshot) -> crate::core::model::Snapshot {
        let mut s = s.clone();
        s.dtype = crate::core::config::Dtype::F32;
        for t in &mut s.tensors {
            let v: Vec<f64> = f64::from_le(&t.data);
            t.data = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
        }
        s
    }

    /// Steps of the workspace (chain kernels) with `cfg`'s optimizer over `data`, from `model`.
    fn batched<F: Real>(
        cfg: &RunConfig,
        model: &Mlp<F>,
        data: &[(Array2<f64>, Vec<u8>)],
        kernel: Kernel,
    ) -> Mlp<F> {
        let o = Optimizer::new(cfg, data.len() / cfg.train.epochs);
        let mut m = model.clone();
        let mut ws = Workspace::<F>::new(&m.sizes(), 8).with_kernel(kernel);
        for (t, (x, y)) in data.iter().enumerate() {
            ws.load(x.mapv(F::from_f64).view(), y);
            ws.forward(&m);
            ws.step(&mut m, o.rule::<F>(t as u64, y.len()));
        }
        ws.sync_model(&mut m);
        m
    }

    /// The batched rules (f64) against the textbook per-sample step of `reference::optimizer_step`:
    /// within 1e-12 of the largest weight after two epochs of steps, for every rule and schedule.
    #[test]
    fn batched_rules_match_the_per_sample_reference() {
        let data = batches(21, 12, 6);
        for act in [Activation::Relu, Activation::Tanh] {
            let mut rng = StreamRng::new(5, Stream::Init);
            let model: Mlp<f64> = Mlp::init(&[12, 9, 7, 4], act, Init::Xavier, &mut rng);
            for (name, cfg) in every_rule() {
                let o = Optimizer::new(&cfg, data.len() / 2);
                let mut want = model.clone();
                let mut state = reference::OptimizerState::default();
                for (t, (x, y)) in data.iter().enumerate() {
                    reference::optimizer_step(
                        &mut want,
                        &mut state,
                        &cfg.optimizer,
                        x,
                        y,
                        o.learning_rate(t as u64),
                    );
                }
                let got = batched(&cfg, &model, &data, Kernel::Chain);
                let scale = want
                    .layers
                    .iter()
                    .flat_map(|l| l.w.iter())
                    .fold(0.0f64, |a, v| a.max(v.abs()));
                for (a, b) in got.layers.iter().zip(&want.layers) {
                    let err =
                        a.w.iter()
                            .zip(&b.w)
                            .chain(a.b.iter().zip(&b.b))
                            .fold(0.0f64, |e, (x, y)| e.max((x - y).abs()));
                    assert!(err <= 1e-12 * scale, "{name} {act:?}: {err:e} of {scale}");
                }
                // The steps moved the weights: a rule that did nothing would pass the comparison too.
                assert_ne!(got, model, "{name}");
                // In f32, from the same weights rounded: within 1e-5 of the largest weight.
                let m32 = Mlp::<f32>::from_snapshot(&to_f32(&model.snapshot()), act).expect("f32");
                let got32 = batched(&cfg, &m32, &data, Kernel::Chain);
                for (a, b) in got32.layers.iter().zip(&want.layers) {
                    let err =
                        a.w.iter()
                            .zip(&b.w)
                            .chain(a.b.iter().zip(&b.b))
                            .fold(0.0f64, |e, (x, y)| e.max((f64::from(*x) - y).abs()));
                    assert!(
                        err <= 1e-5 * scale,
                        "{name} {act:?} f32: {err:e} of {scale}"
                    );
                }
            }
        }
    }

    /// A rule's steps have the same bits on every implementation of the chain kernels (AVX-512,
    /// AVX2+FMA, portable: those this CPU runs), in f32 and f64, with each kernel contract.
    #[test]
    fn rule_steps_have_the_same_bits_on_every_implementation() {
        let data = batches(22, 8, 7);
        let mut rng = StreamRng::new(6, Stream::Init);
        let m64: Mlp<f64> = Mlp::init(&[12, 40, 4], Activation::Relu, Init::He, &mut rng);
        let m32: Mlp<f32> = Mlp::init(&[12, 40, 4], Activation::Relu, Init::He, &mut rng);
        let imps = crate::core::kernel::supported();
        assert!(imps.contains(&crate::core::kernel::Implementation::Portable));
        for (name, cfg) in every_rule() {
            for kernel in [Kernel::Chain, Kernel::Lanes] {
                let on = |imp| {
                    crate::core::kernel::with_implementation(imp, || {
                        (
                            batched(&cfg, &m64, &data, kernel),
                            batched(&cfg, &m32, &data, kernel),
                        )
                    })
                };
                let first = on(imps[0]);
                assert_ne!(first.0, m64, "{name}: the steps moved the weights");
                for &imp in &imps[1..] {
                    assert_eq!(on(imp), first, "{name} {kernel:?} {imp:?}");
                }
            }
        }
    }

    /// A workspace given another's optimizer state continues with its bits (what a resumed run does).
    #[test]
    fn optimizer_state_round_trips_through_a_snapshot() {
        let data = batches(23, 8, 5);
        let mut rng = StreamRng::new(7, Stream::Init);
        let model: Mlp<f32> = Mlp::init(&[12, 33, 4], Activation::Tanh, Init::He, &mut rng);
        for (name, cfg) in every_rule() {
            let o = Optimizer::new(&cfg, 4);
            let whole = batched(&cfg, &model, &data, Kernel::Chain);
            let mut m = model.clone();
            let mut ws = Workspace::<f32>::new(&m.sizes(), 8).with_kernel(Kernel::Chain);
            let mut state = None;
            for (t, (x, y)) in data.iter().enumerate() {
                if t == 4 {
                    ws.sync_model(&mut m);
                    state = ws.optimizer_state();
                    ws = Workspace::<f32>::new(&m.sizes(), 8).with_kernel(Kernel::Chain);
                    if let Some(s) = &state {
                        ws.set_optimizer_state(s).expect("fits");
                    }
                }
                ws.load(x.mapv(|v| v as f32).view(), y);
                ws.forward(&m);
                ws.step(&mut m, o.rule::<f32>(t as u64, y.len()));
            }
            ws.sync_model(&mut m);
            assert_eq!(m, whole, "{name}");
            let stateful = cfg.optimizer.is_stateful();
            assert_eq!(state.is_some(), stateful, "{name}");
            if let Some(s) = state {
                let slots = Optimizer::new(&cfg, 4).slot_names().len();
                assert_eq!(s.tensors.len(), 2 * 2 * slots, "{name}");
            }
        }
    }
}
