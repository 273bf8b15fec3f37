//! What a sweep reports while it trains: log lines, and per-run progress for whoever draws it. The binary
//! draws progress bars on a terminal; [`Lines`] prints plain lines; a library user may do anything else.

/// Receives a sweep's progress. Called from several worker threads at once.
pub trait Progress: Sync {
    /// A line for the log (an epoch, a run started or stopped, a warning).
    fn log(&self, line: &str);
    /// The sweep starts: `runs` runs to train here, `steps` SGD steps in all (the epochs already stored
    /// of resumed runs left out).
    fn sweep_started(&self, _runs: u64, _steps: u64) {}
    /// A run starts (or resumes): its per-batch progress goes to what this returns.
    fn run_started(&self, _run: &RunStart<'_>) -> Box<dyn RunProgress> {
        Box::new(NoProgress)
    }
    /// A run of the sweep is over (in any state).
    fn run_done(&self) {}
}

/// A run that starts training.
#[derive(Debug, Clone, Copy)]
pub struct RunStart<'a> {
    pub run_id: i64,
    pub name: &'a str,
    pub epochs: usize,
    /// Epochs stored already (a resumed run).
    pub done: usize,
    pub batches: usize,
    pub batch_size: usize,
}

/// One run's per-batch progress.
pub trait RunProgress: Send {
    /// After batch `done` of `epoch`, whose loss summed over its samples was `loss_sum`.
    fn batch(&mut self, _epoch: usize, _done: usize, _loss_sum: f64) {}
    /// The run stopped training here.
    fn finish(&mut self) {}
}

struct NoProgress;

impl RunProgress for NoProgress {}

/// Plain log lines on standard output, nothing per batch. A closed pipe is ignored: the sweep goes on
/// and stores its runs.
pub struct Lines;

impl Progress for Lines {
    fn log(&self, line: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}
