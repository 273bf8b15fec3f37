//! What a sweep shows while it trains: on a terminal, a progress bar for the sweep (runs done of the total)
//! and one per run in progress (batches, epoch, running loss, samples/s, ETA) with the epoch lines printed
//! above them; otherwise plain log lines, one per epoch.

use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mlp_runner::sweep::{self, RunProgress, RunStart};

/// Bars on a terminal, plain lines otherwise; shared by the workers of a sweep.
pub struct Bars {
    multi: Option<MultiProgress>,
    sweep: OnceLock<ProgressBar>,
}

impl Bars {
    /// Bars when `bars` (the caller checks for a terminal), plain lines otherwise.
    pub fn new(bars: bool) -> Self {
        let multi =
            bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Bars {
            multi,
            sweep: OnceLock::new(),
        }
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

    fn sweep_started(&self, runs: u64) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(runs));
            bar.set_style(
                ProgressStyle::with_template(
                    "sweep  [{bar:30.green/white}] {pos}/{len} runs  {elapsed_precise} elapsed, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            let _ = self.sweep.set(bar);
        }
    }

    fn run_started(&self, run: &RunStart<'_>) -> Box<dyn RunProgress> {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.insert_before(
                self.sweep.get().unwrap_or(&ProgressBar::hidden()),
                ProgressBar::new((run.epochs * run.batches) as u64),
            );
            bar.set_style(
                ProgressStyle::with_template("run {prefix} [{bar:30.cyan/blue}] {msg}  ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{} {}", run.run_id, run.name));
            bar.set_position((run.done * run.batches) as u64);
            bar
        });
        Box::new(RunBar {
            bar,
            epochs: run.epochs,
            batches: run.batches,
            batch_size: run.batch_size,
            loss_sum: 0.0,
            samples: 0,
        })
    }

    fn run_done(&self) {
        if let Some(s) = self.sweep.get() {
            s.inc(1);
        }
    }
}

/// One run's bar; does nothing without a terminal.
struct RunBar {
    bar: Option<ProgressBar>,
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
            bar.set_position(((epoch - 1) * self.batches + done) as u64);
            let per_s = bar.per_sec() * self.batch_size as f64;
            bar.set_message(format!(
                "epoch {epoch}/{}  batch {done}/{}  loss {:.4}  {:.0} samples/s",
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
