//! What a sweep shows while it trains: on a terminal, a progress bar for the sweep (runs done of the total)
//! and one per run in progress (batches, epoch, running loss, samples/s, ETA) with the epoch lines printed
//! above them; otherwise plain log lines, one per epoch.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared by the workers of a sweep.
pub struct Progress {
    multi: Option<MultiProgress>,
    sweep: Option<ProgressBar>,
}

impl Progress {
    /// Bars when `bars` (the caller checks for a terminal), plain lines otherwise.
    pub fn new(bars: bool) -> Self {
        let multi =
            bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Progress { multi, sweep: None }
    }

    /// Plain lines only (tests, pipes, library use).
    pub fn plain() -> Self {
        Progress::new(false)
    }

    /// Print a line (above the bars when there are bars).
    pub fn log(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        }
    }

    /// Start the sweep's bar: `total` runs to train here.
    pub fn start_sweep(&mut self, total: u64) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template("sweep  [{bar:30.green/white}] {pos}/{len} runs  {elapsed_precise} elapsed, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            self.sweep = Some(bar);
        }
    }

    /// A bar for one run: `epochs` epochs of `batches` batches of `batch_size`, starting after `done` epochs.
    pub fn run_bar(
        &self,
        run_id: i64,
        name: &str,
        epochs: usize,
        done: usize,
        batches: usize,
        batch_size: usize,
    ) -> RunBar {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.insert_before(
                self.sweep.as_ref().unwrap_or(&ProgressBar::hidden()),
                ProgressBar::new((epochs * batches) as u64),
            );
            bar.set_style(
                ProgressStyle::with_template("run {prefix} [{bar:30.cyan/blue}] {msg}  ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{run_id} {name}"));
            bar.set_position((done * batches) as u64);
            bar
        });
        RunBar {
            bar,
            epochs,
            batches,
            batch_size,
            loss_sum: 0.0,
            samples: 0,
        }
    }

    /// One run of the sweep finished (in any state).
    pub fn run_done(&self) {
        if let Some(s) = &self.sweep {
            s.inc(1);
        }
    }

    /// Remove the bars, leaving the printed lines.
    pub fn finish(&self) {
        if let Some(s) = &self.sweep {
            s.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// One run's bar; does nothing without a terminal.
pub struct RunBar {
    bar: Option<ProgressBar>,
    epochs: usize,
    batches: usize,
    batch_size: usize,
    loss_sum: f64,
    samples: usize,
}

impl RunBar {
    /// After batch `done` of `epoch`, whose loss summed over its samples was `loss_sum`.
    pub fn batch(&mut self, epoch: usize, done: usize, loss_sum: f64) {
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

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
