//! `runner bench`: how fast training runs here, and how close it comes to this machine's GEMM.
//!
//! For each dtype and batch size it times real training epochs (the median of several), and just before,
//! in the same process, the plain GEMM calls one SGD step makes (same shapes, same transposes, no other
//! work). The *efficiency* is the training's GFLOP/s over that GEMM's: the ratio to compare across
//! machines and runs, where absolute seconds only describe this machine. It also times evaluation, data
//! loading, and the tutorial's per-sample algorithm ([`crate::core::reference`]) for the speed-up.

use std::path::Path;
use std::time::Instant;

use ndarray::Array2;
use ndarray::linalg::general_mat_mul;

use crate::core::config::{Activation, Dtype, Init, RunConfig};
use crate::core::data::{self, DataFormat, Dataset};
use crate::core::kernel::Kernel;
use crate::core::model::{Mlp, Snapshot};
use crate::core::real::Real;
use crate::core::reference;
use crate::core::rng::{Stream, StreamRng};
use crate::core::train::{Checkpoint, Control, EpochMetrics, Observer, Steps, Training, train};
use crate::core::workspace::{EVAL_BLOCK, Workspace, evaluate};
use crate::error::{Error, Result};

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub dtype: Dtype,
    pub batch: usize,
    /// Median seconds per epoch of SGD steps (over the samples benchmarked).
    pub seconds: f64,
    pub samples_per_s: f64,
    pub gflops: f64,
    /// The same steps' GEMM calls alone, measured just before.
    pub gemm_gflops: f64,
    pub efficiency: f64,
    /// GFLOP/s over this machine's FMA peak for the dtype on the threads used, each epoch against the
    /// peak sampled just before and after it (the median over epochs): on a shared machine whose speed
    /// drifts, a peak measured once at the start would mix two conditions. NaN without a peak.
    pub of_peak: f64,
    /// Seconds per epoch with every product on its own over seconds with the update of W^1 fused with the
    /// next forward pass (the median over pairs timed back to back): what the fusion gains.
    pub fusion_gain: f64,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: String,
    pub sizes: Vec<usize>,
    /// Training samples per timed epoch (the whole set by default).
    pub samples: Option<usize>,
    /// Timed epochs per configuration; the median is reported.
    pub reps: usize,
    pub batches: Vec<usize>,
    pub dtypes: Vec<Dtype>,
    /// A PNG-layout folder to time decoding, if given.
    pub png_dir: Option<String>,
    /// Also time 4 runs one at a time and two at a time (the gain of `--jobs 2`).
    pub jobs_check: bool,
}

/// Floating-point operations of one SGD step on `batch` samples: the forward products, the weight-gradient
/// products, and the products that carry delta back (none for the first layer).
pub fn step_flops(sizes: &[usize], batch: usize) -> f64 {
    let pairs: Vec<f64> = sizes.windows(2).map(|w| (w[0] * w[1]) as f64).collect();
    let all: f64 = pairs.iter().sum();
    let back: f64 = pairs.iter().skip(1).sum();
    2.0 * batch as f64 * (2.0 * all + back)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Peak resident memory of this process so far, in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Seconds for the GEMM calls of `steps` SGD steps of the given shapes, on random matrices.
fn gemm_seconds<F: Real>(sizes: &[usize], batch: usize, steps: usize) -> f64 {
    let mut rng = StreamRng::new(0, Stream::Init);
    let mut rand = |r: usize, c: usize| {
        Array2::from_shape_simple_fn((r, c), || F::from_f64(rng.uniform() - 0.5))
    };
    let ws: Vec<Array2<F>> = sizes.windows(2).map(|w| rand(w[1], w[0])).collect();
    let acts: Vec<Array2<F>> = sizes.iter().map(|&n| rand(batch, n)).collect();
    let mut outs: Vec<Array2<F>> = sizes.iter().map(|&n| Array2::zeros((batch, n))).collect();
    let mut grads: Vec<Array2<F>> = ws.clone();
    let (one, zero) = (F::one(), F::zero());
    let start = Instant::now();
    for _ in 0..steps {
        for l in 0..ws.len() {
            general_mat_mul(one, &acts[l], &ws[l].t(), zero, &mut outs[l + 1]);
        }
        for l in (0..ws.len()).rev() {
            if l > 0 {
                general_mat_mul(one, &acts[l + 1], &ws[l], zero, &mut outs[l]);
            }
            general_mat_mul(one, &acts[l + 1].t(), &acts[l], one, &mut grads[l]);
        }
    }
    start.elapsed().as_secs_f64()
}

/// Collects each epoch's SGD time.
struct Times(Vec<f64>);

impl Observer for Times {
    fn on_start(&mut self, _: &Snapshot) -> Result<()> {
        Ok(())
    }
    fn on_epoch(&mut self, m: &EpochMetrics, _: &Checkpoint) -> Result<Control> {
        self.0.push(m.train_seconds);
        Ok(Control::Continue)
    }
}

fn training_row<F: Real>(ds: &Dataset, opts: &Options, batch: usize) -> Result<Row> {
    let n = opts.samples.unwrap_or(ds.train.len()).min(ds.train.len());
    let steps = n / batch;
    let flops = step_flops(&opts.sizes, batch) * steps as f64;
    let mut cfg = RunConfig::default();
    cfg.data.limit_train = Some(n);
    cfg.data.limit_test = Some(EVAL_BLOCK.min(ds.test.len()));
    cfg.model.sizes = opts.sizes.clone();
    cfg.model.dtype = F::DTYPE;
    cfg.train.batch_size = batch;
    cfg.train.epochs = 1;
    // Warm up (page in, settle the clock), then per rep, back to back: the FMA peak, the GEMM alone, a
    // training epoch, the same epoch with separate steps, the peak again; so that each ratio compares
    // figures taken under the same machine conditions.
    gemm_seconds::<F>(&opts.sizes, batch, steps / 10 + 1);
    let epoch = |steps: Steps| -> Result<f64> {
        let mut t = Times(Vec::new());
        Training::new(&cfg, ds).steps(steps).run(&mut t)?;
        Ok(t.0.first().copied().unwrap_or(f64::NAN))
    };
    let threads = crate::core::pool::threads() as f64;
    let (mut times, mut gemms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut of_peak, mut gains) = (Vec::new(), Vec::new());
    for _ in 0..opts.reps {
        let before = peak_sample(F::DTYPE);
        let gemm = gemm_seconds::<F>(&opts.sizes, batch, steps);
        let seconds = epoch(Steps::Fused)?;
        let separate = epoch(Steps::Separate)?;
        let after = peak_sample(F::DTYPE);
        times.push(seconds);
        gemms.push(gemm);
        ratios.push(gemm / seconds);
        gains.push(separate / seconds);
        if let (Some(b), Some(a)) = (before, after) {
            of_peak.push(flops / seconds / 1e9 / (b.max(a) * threads));
        }
    }
    let (seconds, gemm) = (median(times), median(gemms));
    Ok(Row {
        what: format!("train epoch, {}", Kernel::for_run(F::DTYPE).name(F::DTYPE)),
        dtype: F::DTYPE,
        batch,
        seconds,
        samples_per_s: (steps * batch) as f64 / seconds,
        gflops: flops / seconds / 1e9,
        gemm_gflops: flops / gemm / 1e9,
        efficiency: median(ratios),
        of_peak: if of_peak.is_empty() {
            f64::NAN
        } else {
            median(of_peak)
        },
        fusion_gain: median(gains),
    })
}

/// One optimizer's row of `runner bench --optimizers`.
#[derive(Debug, Clone)]
pub struct OptimizerRow {
    /// `[optimizer]` in short (`sgd momentum=0.9`).
    pub optimizer: String,
    pub dtype: Dtype,
    pub batch: usize,
    /// Median seconds per epoch of steps.
    pub seconds: f64,
    /// Median over reps of this optimizer's epoch over plain SGD's, timed back to back in the same rep.
    pub ratio: f64,
    /// Bytes of optimizer state (velocities or moments) the run keeps, W and b of every layer.
    pub state_bytes: usize,
}

/// The optimizers `runner bench --optimizers` times against plain SGD: momentum, Nesterov, Adam, AdamW,
/// and plain SGD with dropout 0.2 on the hidden layers (the second of each pair).
pub fn optimizer_variants() -> Vec<(crate::core::config::OptimizerSpec, f64)> {
    use crate::core::config::{OptimizerKind, OptimizerSpec};
    let with = |edit: &dyn Fn(&mut OptimizerSpec)| {
        let mut o = OptimizerSpec::default();
        edit(&mut o);
        o
    };
    vec![
        (OptimizerSpec::default(), 0.0),
        (with(&|o| o.momentum = 0.9), 0.0),
        (
            with(&|o| {
                o.momentum = 0.9;
                o.nesterov = true;
            }),
            0.0,
        ),
        (with(&|o| o.kind = OptimizerKind::Adam), 0.0),
        (
            with(&|o| {
                o.kind = OptimizerKind::Adamw;
                o.weight_decay = 0.01;
            }),
            0.0,
        ),
        (OptimizerSpec::default(), 0.2),
    ]
}

/// Time one epoch of steps with each of [`optimizer_variants`] per rep, back to back, and report each
/// as a ratio to plain SGD's epoch of the same rep (the median over reps).
pub fn optimizers(opts: &Options, log: &dyn Fn(&str)) -> Result<Vec<OptimizerRow>> {
    let ds = data::load(Path::new(&opts.data_dir), DataFormat::Auto)?;
    let variants = optimizer_variants();
    let params: usize = opts.sizes.windows(2).map(|w| w[1] * (w[0] + 1)).sum();
    let mut rows = Vec::new();
    for &dtype in &opts.dtypes {
        for &batch in &opts.batches {
            log(&format!(
                "timing optimizers, {} batch {batch} ...",
                dtype.as_str()
            ));
            let n = opts.samples.unwrap_or(ds.train.len()).min(ds.train.len());
            let epoch = |(o, dropout): &(crate::core::config::OptimizerSpec, f64)| -> Result<f64> {
                let mut cfg = RunConfig::default();
                cfg.data.limit_train = Some(n);
                cfg.data.limit_test = Some(EVAL_BLOCK.min(ds.test.len()));
                cfg.model.sizes = opts.sizes.clone();
                cfg.model.dtype = dtype;
                cfg.train.batch_size = batch;
                cfg.train.learning_rate = 0.001;
                cfg.train.epochs = 1;
                cfg.optimizer = o.clone();
                cfg.model.dropout = crate::core::config::Dropout::Every(*dropout);
                let mut t = Times(Vec::new());
                train(&cfg, &ds, &mut t, None)?;
                Ok(t.0.first().copied().unwrap_or(f64::NAN))
            };
            epoch(&variants[0])?; // warm up
            let mut times = vec![Vec::new(); variants.len()];
            let mut ratios = vec![Vec::new(); variants.len()];
            for _ in 0..opts.reps {
                let rep: Vec<f64> = variants.iter().map(&epoch).collect::<Result<_>>()?;
                for (i, t) in rep.iter().enumerate() {
                    times[i].push(*t);
                    ratios[i].push(t / rep[0]);
                }
            }
            for (i, (o, dropout)) in variants.iter().enumerate() {
                let slots = match o.kind {
                    crate::core::config::OptimizerKind::Sgd => usize::from(o.momentum > 0.0),
                    _ => 2,
                };
                rows.push(OptimizerRow {
                    optimizer: if *dropout > 0.0 {
                        format!("{} + dropout {dropout}", o.describe())
                    } else {
                        o.describe()
                    },
                    dtype,
                    batch,
                    seconds: median(times[i].clone()),
                    ratio: median(ratios[i].clone()),
                    state_bytes: slots * params * dtype.size(),
                });
            }
        }
    }
    Ok(rows)
}

/// A competing load for `runner bench --threads N --load`: one thread that spins for [`LOAD_ON`], then
/// sleeps for [`LOAD_OFF`], over and over: half of one core, in bursts, as another user's process on a
/// shared node or a laptop's background work takes it.
pub const LOAD_ON: std::time::Duration = std::time::Duration::from_millis(20);
pub const LOAD_OFF: std::time::Duration = std::time::Duration::from_millis(20);

/// The load of [`LOAD_ON`] / [`LOAD_OFF`], running until dropped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                let mut x = 1u64;
                while !flag.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    while t.elapsed() < LOAD_ON {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    std::thread::sleep(LOAD_OFF);
                }
            })
            .ok();
        Load { stop, handle }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One row of `runner bench --threads N --load`: an epoch on one thread against N threads, quiet and
/// under the load (`Load`), each a median over reps timed back to back.
#[derive(Debug, Clone)]
pub struct ThreadsRow {
    pub dtype: Dtype,
    pub batch: usize,
    pub threads: usize,
    /// Seconds of an epoch's SGD steps on one thread.
    pub one: f64,
    /// The same on `threads` threads, quiet.
    pub many: f64,
    /// Median over reps of one / many.
    pub speedup: f64,
    /// Median over reps of the epoch's evaluation (training and test sets) on one thread over `threads`.
    pub eval_speedup: f64,
    /// Seconds of the steps on `threads` threads under the load.
    pub loaded: f64,
    /// Median over reps of loaded / many - 1: what the load costs.
    pub load_loss: f64,
}

/// Time epochs at each batch and dtype of `opts` on one thread and on `threads` threads (quiet), then on
/// `threads` threads beside the load (`Load`), back to back in each rep.
pub fn threads_under_load(
    opts: &Options,
    threads: usize,
    log: &dyn Fn(&str),
) -> Result<Vec<ThreadsRow>> {
    let ds = data::load(Path::new(&opts.data_dir), DataFormat::Auto)?;
    let mut rows = Vec::new();
    for &dtype in &opts.dtypes {
        for &batch in &opts.batches {
            log(&format!(
                "timing {} batch {batch} on 1 and {threads} threads, quiet and under load ...",
                dtype.as_str()
            ));
            let n = opts.samples.unwrap_or(ds.train.len()).min(ds.train.len());
            let mut cfg = RunConfig::default();
            cfg.data.limit_train = Some(n);
            cfg.model.sizes = opts.sizes.clone();
            cfg.model.dtype = dtype;
            cfg.train.batch_size = batch;
            cfg.train.epochs = 1;
            // (steps, evaluation) seconds of one epoch on `t` threads.
            let epoch = |t: usize| -> Result<(f64, f64)> {
                struct Both(Option<(f64, f64)>);
                impl Observer for Both {
                    fn on_start(&mut self, _: &Snapshot) -> Result<()> {
                        Ok(())
                    }
                    fn on_epoch(&mut self, m: &EpochMetrics, _: &Checkpoint) -> Result<Control> {
                        self.0 = Some((m.train_seconds, m.seconds - m.train_seconds));
                        Ok(Control::Continue)
                    }
                }
                let mut o = Both(None);
                crate::core::pool::with_threads(t, || train(&cfg, &ds, &mut o, None))?;
                Ok(o.0.unwrap_or((f64::NAN, f64::NAN)))
            };
            epoch(threads)?; // warm up (and start the helpers)
            let (mut one, mut many, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
            let (mut speedup, mut eval_speedup, mut loss) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..opts.reps {
                let (s1, e1) = epoch(1)?;
                let (sn, en) = epoch(threads)?;
                let (sl, _) = {
                    let _load = Load::start();
                    epoch(threads)?
                };
                one.push(s1);
                many.push(sn);
                loaded.push(sl);
                speedup.push(s1 / sn);
                eval_speedup.push(e1 / en);
                loss.push(sl / sn - 1.0);
            }
            rows.push(ThreadsRow {
                dtype,
                batch,
                threads,
                one: median(one),
                many: median(many),
                speedup: median(speedup),
                eval_speedup: median(eval_speedup),
                loaded: median(loaded),
                load_loss: median(loss),
            });
        }
    }
    Ok(rows)
}

/// Seconds for 4 short runs trained one after another, and two at a time on two threads.
fn jobs_speedup(ds: &Dataset, sizes: &[usize], samples: usize) -> Result<(f64, f64)> {
    let cfg = |seed: u64| {
        let mut c = RunConfig::default();
        c.data.limit_train = Some(samples.min(ds.train.len()));
        c.data.limit_test = Some(EVAL_BLOCK.min(ds.test.len()));
        c.model.sizes = sizes.to_vec();
        c.train.batch_size = 128;
        c.train.epochs = 1;
        c.train.seed = seed;
        c
    };
    let one_run = |seed: u64| train(&cfg(seed), ds, &mut Times(Vec::new()), None).map(|_| ());
    let t = Instant::now();
    for seed in 1..=4 {
        one_run(seed)?;
    }
    let sequential = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = [[1, 3], [2, 4]]
            .map(|seeds| s.spawn(move || seeds.iter().try_for_each(|&seed| one_run(seed))))
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a bench thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok((sequential, t.elapsed().as_secs_f64()))
}

/// Forward passes over both splits (as each epoch's evaluation does), median of `reps`; with the best
/// FMA peak sampled just before and after them.
fn eval_seconds<F: Real>(
    ds: &Dataset,
    sizes: &[usize],
    reps: usize,
    kernel: Kernel,
) -> (f64, Option<f64>) {
    let model: Mlp<F> = Mlp::init(
        sizes,
        Activation::Relu,
        Init::He,
        &mut StreamRng::new(1, Stream::Init),
    );
    let mut ws = Workspace::<F>::for_eval(sizes, EVAL_BLOCK).with_kernel(kernel);
    let before = peak_sample(F::DTYPE);
    let seconds = median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                evaluate(&model, ds.train.prefix(None), &mut ws);
                evaluate(&model, ds.test.prefix(None), &mut ws);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let after = peak_sample(F::DTYPE);
    (seconds, before.zip(after).map(|(b, a)| b.max(a)))
}

/// The tutorial's per-sample algorithm on a few hundred batches of 10: samples per second.
fn reference_samples_per_s(ds: &Dataset, sizes: &[usize], batches: usize) -> f64 {
    let mut m: Mlp<f64> = Mlp::init(
        sizes,
        Activation::Relu,
        Init::He,
        &mut StreamRng::new(1, Stream::Init),
    );
    let view = ds.train.prefix(None);
    let start = Instant::now();
    for b in 0..batches {
        let idx: Vec<usize> = (b * 10..b * 10 + 10).collect();
        let x = Array2::from_shape_fn((10, view.pixels), |(r, c)| {
            view.image(idx[r])[c] as f64 / 255.0
        });
        let y: Vec<u8> = idx.iter().map(|&i| view.labels[i]).collect();
        reference::sgd_step(&mut m, &x, &y, 0.1);
    }
    (batches * 10) as f64 / start.elapsed().as_secs_f64()
}

/// The multiply-add peak of one core for `dtype`: independent chains of FMAs on full vectors, nothing
/// loaded from memory (AVX-512: 16 chains of 16 f32 or 8 f64 lanes; AVX2: 12 chains of 8 or 4, as its 16
/// registers hold 12 chains and the two operands; 16 chains spilled, and read a Zen 3 peak at about
/// half; NEON: 16 chains of 4 f32 or 2 f64). GFLOP/s, or None on a CPU with none of these.
/// Measured once per process (the best of 3 runs) and kept.
pub fn fma_peak_gflops(dtype: Dtype) -> Option<f64> {
    static PEAKS: std::sync::OnceLock<(Option<f64>, Option<f64>)> = std::sync::OnceLock::new();
    let (f32_peak, f64_peak) =
        *PEAKS.get_or_init(|| (measure_peak(Dtype::F32), measure_peak(Dtype::F64)));
    match dtype {
        Dtype::F32 => f32_peak,
        Dtype::F64 => f64_peak,
    }
}

fn measure_peak(dtype: Dtype) -> Option<f64> {
    peak_best_of(dtype, 5_000_000, 3)
}

/// A quick sample of the FMA peak (a few milliseconds), taken beside each timed figure.
fn peak_sample(dtype: Dtype) -> Option<f64> {
    peak_best_of(dtype, 2_000_000, 3)
}

/// The FMA peak for `dtype`: GFLOP/s of the best of `reps` runs of `iters` rounds of the chains.
fn peak_best_of(dtype: Dtype, iters: usize, reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn chains512(iters: usize) -> f32 {
            let mut acc = [_mm512_setzero_ps(); 16];
            let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, x, y);
                }
            }
            acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
        }
        #[target_feature(enable = "avx512f")]
        fn chains512d(iters: usize) -> f32 {
            let mut acc = [_mm512_setzero_pd(); 16];
            let (x, y) = (_mm512_set1_pd(0.999_999), _mm512_set1_pd(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_pd(*a, x, y);
                }
            }
            acc.iter().map(|&a| _mm512_reduce_add_pd(a)).sum::<f64>() as f32
        }
        const CHAINS_256: usize = 12;
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iters: usize) -> f32 {
            let mut acc = [_mm256_setzero_ps(); CHAINS_256];
            let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, x, y);
                }
            }
            let mut out = [0f32; 8];
            acc.iter().for_each(|&a| {
                let mut v = [0f32; 8];
                // SAFETY: v holds 8 floats.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr(), a) };
                out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
            });
            out.iter().sum()
        }
        #[target_feature(enable = "avx2,fma")]
        fn chains256d(iters: usize) -> f32 {
            let mut acc = [_mm256_setzero_pd(); CHAINS_256];
            let (x, y) = (_mm256_set1_pd(0.999_999), _mm256_set1_pd(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_pd(*a, x, y);
                }
            }
            let mut out = [0f64; 4];
            acc.iter().for_each(|&a| {
                let mut v = [0f64; 4];
                // SAFETY: v holds 4 doubles.
                unsafe { _mm256_storeu_pd(v.as_mut_ptr(), a) };
                out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
            });
            out.iter().sum::<f64>() as f32
        }
        let wide = if dtype == Dtype::F32 { 1.0 } else { 0.5 };
        type Chains = Box<dyn Fn(usize) -> f32>;
        let (run, lanes, chains): (Chains, f64, f64) = if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            match dtype {
                Dtype::F32 => (Box::new(|n| unsafe { chains512(n) }), 16.0, 16.0),
                Dtype::F64 => (Box::new(|n| unsafe { chains512d(n) }), 16.0 * wide, 16.0),
            }
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let chains = CHAINS_256 as f64;
            // SAFETY: the CPU has AVX2 and FMA.
            match dtype {
                Dtype::F32 => (Box::new(|n| unsafe { chains256(n) }), 8.0, chains),
                Dtype::F64 => (Box::new(|n| unsafe { chains256d(n) }), 8.0 * wide, chains),
            }
        } else {
            return None;
        };
        let best = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(run(iters));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some(iters as f64 * chains * lanes * 2.0 / best / 1e9)
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // 16 chains of 128-bit FMLAs (4 f32 or 2 f64 lanes): 16 of the 32 registers, enough to cover
        // the latency of four FMA pipes.
        const CHAINS_Q: usize = 16;
        fn chains_q(iters: usize) -> f32 {
            // SAFETY: NEON is part of every aarch64 CPU.
            unsafe {
                let mut acc = [vdupq_n_f32(0.0); CHAINS_Q];
                let (x, y) = (vdupq_n_f32(0.999_999), vdupq_n_f32(1e-7));
                for _ in 0..iters {
                    for a in acc.iter_mut() {
                        *a = vfmaq_f32(y, *a, x);
                    }
                }
                acc.iter().map(|&a| vaddvq_f32(a)).sum()
            }
        }
        fn chains_qd(iters: usize) -> f32 {
            // SAFETY: as above.
            unsafe {
                let mut acc = [vdupq_n_f64(0.0); CHAINS_Q];
                let (x, y) = (vdupq_n_f64(0.999_999), vdupq_n_f64(1e-7));
                for _ in 0..iters {
                    for a in acc.iter_mut() {
                        *a = vfmaq_f64(y, *a, x);
                    }
                }
                acc.iter().map(|&a| vaddvq_f64(a)).sum::<f64>() as f32
            }
        }
        let (run, lanes): (fn(usize) -> f32, f64) = match dtype {
            Dtype::F32 => (chains_q, 4.0),
            Dtype::F64 => (chains_qd, 2.0),
        };
        let best = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(run(std::hint::black_box(iters)));
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        Some(iters as f64 * CHAINS_Q as f64 * lanes * 2.0 / best / 1e9)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (dtype, iters, reps);
        None
    }
}

/// One product of a step timed alone by [`kernels`].
#[derive(Debug, Clone)]
pub struct KernelRow {
    /// `Z = A W^T`, `update W`, `update W, then Z`, each with the lanes kernels (`lanes ...`) and the
    /// chain kernels (`chain ...`, W in panels).
    pub product: &'static str,
    pub dtype: Dtype,
    /// Rows of A (the batch, or an evaluation block), rows of W, columns of both.
    pub shape: (usize, usize, usize),
    /// GFLOP/s of the best run.
    pub gflops: f64,
    /// The best run over the best FMA peak sampled between runs, on the threads used.
    pub of_peak: f64,
}

/// Each matrix product of an SGD step and of evaluation on its own, for the first layer of `sizes`
/// (the largest), at each batch and at an evaluation block: the best of `reps` runs of about 1 GFLOP,
/// interleaved with samples of the FMA peak. On a shared host whose speed moves between runs of the same
/// command, the best of many short runs is the figure that repeats: it says what the kernels reach, where
/// the epoch times of [`run`] say what a user saw.
pub fn kernels(
    sizes: &[usize],
    batches: &[usize],
    dtypes: &[Dtype],
    reps: usize,
) -> Vec<KernelRow> {
    let mut rows = Vec::new();
    for &dtype in dtypes {
        let mut shapes: Vec<usize> = batches.to_vec();
        shapes.push(EVAL_BLOCK);
        for n in shapes {
            match dtype {
                Dtype::F32 => rows.extend(kernel_rows::<f32>(sizes, n, reps, n != EVAL_BLOCK)),
                Dtype::F64 => rows.extend(kernel_rows::<f64>(sizes, n, reps, n != EVAL_BLOCK)),
            }
        }
    }
    rows
}

fn kernel_rows<F: Real + crate::core::kernel::Lane + crate::core::kernel::Vector>(
    sizes: &[usize],
    n: usize,
    reps: usize,
    training: bool,
) -> Vec<KernelRow> {
    use crate::core::kernel::{self, Coef, Epilogue, Mat, MatMut};
    use crate::core::real::aligned_zeros;
    let (k, h) = (sizes[0], sizes.get(1).copied().unwrap_or(sizes[0]));
    let mut rng = StreamRng::new(7, Stream::Init);
    let mut rand = |r: usize, c: usize| {
        let mut m = aligned_zeros::<F>(r, c);
        m.mapv_inplace(|_| F::from_f64(rng.uniform() - 0.5));
        m
    };
    let (a, next, delta) = (rand(n, k), rand(n, k), rand(n, h));
    let (mut w, mut z) = (rand(h, k), rand(n, h));
    // 64-byte aligned, as the workspace's buffers.
    let (Some(a), Some(next), Some(delta)) = (a.as_slice(), next.as_slice(), delta.as_slice())
    else {
        return Vec::new();
    };
    let alpha = F::from_f64(-1e-6);
    let flops = 2.0 * (n * h * k) as f64;
    let calls = ((1e9 / flops) as usize).max(1);
    let products: &[&'static str] = if training {
        &[
            "lanes Z = A W^T",
            "lanes update W",
            "lanes update W, then Z",
            "chain Z = A W^T",
            "chain update W",
            "chain update W, then Z",
        ]
    } else {
        &["lanes Z = A W^T", "chain Z = A W^T"]
    };
    let mut panels = kernel::chain::Panels::<F>::new(h, k);
    if let Some(wd) = w.as_slice() {
        panels.pack(rows_of(wd, h, k));
    }
    let (mut best, mut peak) = (vec![f64::INFINITY; products.len()], 0.0f64);
    fn rows_of<T>(data: &[T], rows: usize, cols: usize) -> Mat<'_, T> {
        Mat {
            data,
            rows,
            cols,
            ld: cols,
        }
    }
    let mat = |d, rows| rows_of(d, rows, k);
    for _ in 0..reps {
        peak = peak.max(peak_sample(F::DTYPE).unwrap_or(f64::NAN));
        for (p, best) in best.iter_mut().enumerate() {
            let mut t = Instant::now();
            // One call first, untimed: the operands back in cache after the peak's loop.
            for call in 0..=calls {
                if call == 1 {
                    t = Instant::now();
                }
                let (Some(wd), Some(zd)) = (w.as_slice_mut(), z.as_slice_mut()) else {
                    return Vec::new();
                };
                let zm = MatMut {
                    data: zd,
                    rows: n,
                    cols: h,
                    ld: h,
                };
                let coef = Coef {
                    data: delta,
                    row_stride: 1,
                    term_stride: h,
                };
                fn rows_of_mut<T>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
                    MatMut {
                        data,
                        rows,
                        cols,
                        ld: cols,
                    }
                }
                let deltam = rows_of(delta, n, h);
                match products[p] {
                    "chain Z = A W^T" => kernel::chain::forward(mat(a, n), &panels, zm),
                    "chain update W" => {
                        kernel::chain::update(deltam, mat(a, n), &mut panels, alpha)
                    }
                    "chain update W, then Z" => kernel::chain::update_then_forward(
                        deltam,
                        mat(a, n),
                        &mut panels,
                        alpha,
                        Some((mat(next, n), zm)),
                    ),
                    "lanes Z = A W^T" => kernel::abt(mat(a, n), rows_of(wd, h, k), zm),
                    "lanes update W" => kernel::combine(
                        coef,
                        mat(a, n),
                        rows_of_mut(wd, h, k),
                        Epilogue::Axpy(alpha),
                    ),
                    _ => kernel::update_then_abt(
                        coef,
                        mat(a, n),
                        rows_of_mut(wd, h, k),
                        alpha,
                        mat(next, n),
                        zm,
                    ),
                }
            }
            *best = best.min(t.elapsed().as_secs_f64());
        }
    }
    let threads = crate::core::pool::threads() as f64;
    products
        .iter()
        .zip(best)
        .map(|(&product, seconds)| {
            let per_call = if product.ends_with("update W, then Z") {
                2.0 * flops
            } else {
                flops
            };
            let gflops = per_call * calls as f64 / seconds / 1e9;
            KernelRow {
                product,
                dtype: F::DTYPE,
                shape: (n, h, k),
                gflops,
                of_peak: gflops / (peak * threads),
            }
        })
        .collect()
}

/// The whole report: training rows, then (what, value) notes for eval, load, decode, reference, memory.
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<(String, String)>,
}

pub fn run(opts: &Options, log: &dyn Fn(&str)) -> Result<Report> {
    let mut extra = Vec::new();
    let t = Instant::now();
    let ds = data::load(Path::new(&opts.data_dir), DataFormat::Auto)?;
    let load = t.elapsed().as_secs_f64();
    extra.push((
        format!(
            "load {} ({} + {} images, {:?})",
            opts.data_dir,
            ds.train.len(),
            ds.test.len(),
            ds.format
        ),
        format!("{load:.3} s"),
    ));
    if let Some(png) = &opts.png_dir {
        let t = Instant::now();
        let p = data::load(Path::new(png), DataFormat::Png)?;
        extra.push((
            format!(
                "decode PNG layout {png} ({} images)",
                p.train.len() + p.test.len()
            ),
            format!("{:.3} s", t.elapsed().as_secs_f64()),
        ));
    }
    for dtype in [Dtype::F32, Dtype::F64] {
        let Some(peak) = fma_peak_gflops(dtype) else {
            continue;
        };
        let floor = step_flops(&opts.sizes, 1) * 60_000.0 / (peak * 1e9);
        extra.push((
            format!("{} FMA peak of one core (best of 3)", dtype.as_str()),
            format!(
                "{peak:.0} GFLOP/s: an {} epoch of 60 000 samples takes at least {floor:.2} s on one core",
                dtype.as_str()
            ),
        ));
    }
    let mut rows = Vec::new();
    for &dtype in &opts.dtypes {
        for &batch in &opts.batches {
            log(&format!("timing {} batch {batch} ...", dtype.as_str()));
            rows.push(match dtype {
                Dtype::F32 => training_row::<f32>(&ds, opts, batch)?,
                Dtype::F64 => training_row::<f64>(&ds, opts, batch)?,
            });
        }
        let kernels: &[Kernel] = &[Kernel::Chain, Kernel::Lanes, Kernel::Gemm];
        for &kernel in kernels {
            let (eval, peak) = match dtype {
                Dtype::F32 => eval_seconds::<f32>(&ds, &opts.sizes, opts.reps, kernel),
                Dtype::F64 => eval_seconds::<f64>(&ds, &opts.sizes, opts.reps, kernel),
            };
            let name = kernel.name(dtype);
            let flops = 2.0
                * (ds.train.len() + ds.test.len()) as f64
                * opts
                    .sizes
                    .windows(2)
                    .map(|w| (w[0] * w[1]) as f64)
                    .sum::<f64>();
            let of_peak = peak.map_or(String::new(), |p| {
                format!(
                    ", {:.0}% of the FMA peak on {} thread{}",
                    100.0 * flops / eval / 1e9 / (p * crate::core::pool::threads() as f64),
                    crate::core::pool::threads(),
                    if crate::core::pool::threads() == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            });
            extra.push((
                format!(
                    "evaluate {} + {} images, {} {name}",
                    ds.train.len(),
                    ds.test.len(),
                    dtype.as_str()
                ),
                format!("{eval:.3} s ({:.1} GFLOP/s{of_peak})", flops / eval / 1e9),
            ));
        }
    }
    if opts.jobs_check {
        log("timing 4 runs one at a time, then two at a time ...");
        let (one, two) = jobs_speedup(&ds, &opts.sizes, opts.samples.unwrap_or(10_000))?;
        extra.push((
            "a sweep of 4 runs (batch 128): --jobs 1 vs --jobs 2".into(),
            format!(
                "{one:.2} s vs {two:.2} s: {:.2}x the runs per hour",
                one / two
            ),
        ));
    }
    log("timing the per-sample reference ...");
    let reference = reference_samples_per_s(&ds, &opts.sizes, 300);
    extra.push((
        "tutorial's per-sample algorithm (f64, batch 10)".into(),
        format!("{reference:.0} samples/s"),
    ));
    if let Some(best) = rows.iter().find(|r| r.batch == 10 && r.dtype == Dtype::F64) {
        extra.push((
            "speed-up of batched f64 batch 10 over it".into(),
            format!("{:.1}x", best.samples_per_s / reference),
        ));
    }
    extra.push(("peak RSS".into(), format!("{:.0} MB", peak_rss_mb())));
    extra.push((
        "kernels".into(),
        format!(
            "training: {}; also timed: {}, {}; the GEMM compared: {}",
            Kernel::for_run(Dtype::F32).describe(Dtype::F32),
            Kernel::Lanes.describe(Dtype::F32),
            Kernel::Lanes.describe(Dtype::F64),
            Kernel::Gemm.describe(Dtype::F64)
        ),
    ));
    Ok(Report { rows, notes: extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_flops_match_the_issue_figure() {
        // [784, 512, 10] over 60 000 samples: 98.2 GFLOP per epoch.
        let per_epoch = step_flops(&[784, 512, 10], 10) * 6000.0;
        assert!((per_epoch / 1e9 - 98.2).abs() < 0.1, "{per_epoch}");
    }
}
