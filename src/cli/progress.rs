//! What a sweep shows while it trains: on a terminal, a progress bar for the sweep (SGD steps done of the
//! total, so that its ETA moves from the first batches; runs done beside it) and one per run in progress
//! (ETA, epoch, batch, running loss, samples/s), each line cut to the terminal's width, with the epoch
//! lines printed above them; otherwise plain log lines, one per epoch.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mlp_runner::sweep::{self, RunProgress, RunStart};

/// Bars on a terminal, plain lines otherwise; shared by the workers of a sweep.
pub struct Bars {
    multi: Option<MultiProgress>,
    sweep: OnceLock<ProgressBar>,
    /// Runs to train, and runs done.
    runs: OnceLock<(u64, AtomicU64)>,
}

impl Bars {
    /// Bars when `bars` (the caller checks for a terminal), plain lines otherwise.
    pub fn new(bars: bool) -> Self {
        let multi =
            bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Bars {
            multi,
            sweep: OnceLock::new(),
            runs: OnceLock::new(),
        }
    }

    /// Are bars drawn (on a terminal)?
    pub fn drawing(&self) -> bool {
        self.multi.is_some()
    }

    /// Remove the bars, leaving the printed lines.
    pub fn finish(&self) {
        if let Some(s) = self.sweep.get() {
            s.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl sweep::Progress for Bars {
    fn log(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => sweep::Lines.log(line),
        }
    }

    fn sweep_started(&self, runs: u64, steps: u64) {
        if let Some(m) = &self.multi {
            // Counted in SGD steps, so that the ETA moves from the first batches on; runs in the message.
            let bar = m.add(ProgressBar::new(steps));
            bar.set_style(sweep_style(false));
            bar.enable_steady_tick(Duration::from_millis(500));
            let _ = self.runs.set((runs, AtomicU64::new(0)));
            bar.set_message(format!("0/{runs} runs done"));
            let _ = self.sweep.set(bar);
        }
    }

    fn run_started(&self, run: &RunStart<'_>) -> Box<dyn RunProgress> {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.insert_before(
                self.sweep.get().unwrap_or(&ProgressBar::hidden()),
                ProgressBar::new((run.epochs * run.batches) as u64),
            );
            // Fixed parts of about 40 columns, then a message cut to the terminal's width; the run's
            // name is in the line printed when it starts.
            bar.set_style(
                ProgressStyle::with_template(
                    "run {prefix} [{bar:20.cyan/blue}] ETA {eta:>4}  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(run.run_id.to_string());
            bar.set_position((run.done * run.batches) as u64);
            bar
        });
        Box::new(RunBar {
            bar,
            sweep: self.sweep.get().cloned(),
            counted: 0,
            epochs: run.epochs,
            batches: run.batches,
            batch_size: run.batch_size,
            loss_sum: 0.0,
            samples: 0,
        })
    }

    fn run_done(&self) {
        if let (Some(s), Some((total, done))) = (self.sweep.get(), self.runs.get()) {
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            s.set_message(format!("{n}/{total} runs done"));
        }
    }
}

/// The sweep's bar: 20 columns of bar, percent, ETA (once steps were timed), runs done; about 45 columns.
fn sweep_style(eta: bool) -> ProgressStyle {
    let template = if eta {
        "sweep [{bar:20.green/white}] {percent:>3}%  ETA {eta:>4}  {wide_msg}"
    } else {
        "sweep [{bar:20.green/white}] {percent:>3}%  ETA  ...  {wide_msg}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// One run's bar; does nothing without a terminal.
struct RunBar {
    bar: Option<ProgressBar>,
    /// The sweep's bar, advanced by this run's steps.
    sweep: Option<ProgressBar>,
    /// Steps of this run already counted on the sweep's bar.
    counted: u64,
    epochs: usize,
    batches: usize,
    batch_size: usize,
    loss_sum: f64,
    samples: usize,
}

impl RunProgress for RunBar {
    fn batch(&mut self, epoch: usize, done: usize, loss_sum: f64) {
        let Some(bar) = &self.bar else { return };
        if done == 1 {
            self.loss_sum = 0.0;
            self.samples = 0;
        }
        self.loss_sum += loss_sum;
        self.samples += self.batch_size;
        if done.is_multiple_of(16) || done == self.batches {
            let at = ((epoch - 1) * self.batches + done) as u64;
            bar.set_position(at);
            if let Some(s) = &self.sweep {
                // A resumed run starts counting at its first new step.
                if self.counted == 0 {
                    self.counted = at.saturating_sub(done as u64);
                }
                // No estimate before the first steps: then the ETA appears.
                if s.position() == 0 {
                    s.set_style(sweep_style(true));
                }
                s.inc(at.saturating_sub(self.counted));
                self.counted = at;
            }
            let per_s = bar.per_sec() * self.batch_size as f64;
            bar.set_message(format!(
                "epoch {epoch}/{}  batch {done}/{}  loss {:.4}  {:.0}/s",
                self.epochs,
                self.batches,
                self.loss_sum / self.samples.max(1) as f64,
                per_s
            ));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
