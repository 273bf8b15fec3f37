//! Threads for this crate's kernels (`--threads`): each training thread keeps its own helper threads,
//! which wait spinning for a short while between products and then sleep.
//!
//! A product is split into parts that write disjoint outputs and compute each output element whole, so
//! the split never changes a bit (see [`crate::core::kernel`]). A step at batch 10 makes products of tens of
//! microseconds, too short to start threads for: the helpers live as long as the thread that made them.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Multiply-adds below which a part is not worth a thread (about 10 microseconds of work).
const MIN_WORK_PER_PART: usize = 1 << 20;

/// How long an idle helper spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Threads per matrix product, for this crate's kernels and matrixmultiply alike: `MATMUL_NUM_THREADS` (which the
/// binary sets from `--threads` before anything runs), clamped to 1..=4 as matrixmultiply does. (A library
/// user who does not set it gets one thread here and matrixmultiply's own default, the physical core count.)
pub fn configured_threads() -> usize {
    std::env::var("MATMUL_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Threads per product: [`configured_threads`], read once.
pub fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(configured_threads)
}

/// Parts for a product of `work` multiply-adds that splits into at most `max_parts` pieces (1 inside a
/// part: a part's products run on its own thread).
pub(crate) fn parts(work: usize, max_parts: usize) -> usize {
    available(max_parts).min(work / MIN_WORK_PER_PART).max(1)
}

/// Parts for work that splits into at most `max_parts` pieces of any size: the threads, or 1 inside a
/// part.
pub(crate) fn available(max_parts: usize) -> usize {
    if IN_PART.with(Cell::get) {
        return 1;
    }
    threads().min(max_parts).max(1)
}

thread_local! {
    /// Set while this thread runs a part of [`run`].
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// `f(part)` with [`IN_PART`] set, so that what it calls does not split again.
fn as_part(f: &(dyn Fn(usize) + Sync), part: usize) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_PART.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_PART.with(|c| c.replace(true)));
    f(part);
}

/// The range of `total` items part `p` of `parts` takes, in whole multiples of `granule` (except the
/// last part's end).
pub(crate) fn split(total: usize, parts: usize, p: usize, granule: usize) -> (usize, usize) {
    let granules = total.div_ceil(granule.max(1));
    let at = |q: usize| (granules * q / parts * granule).min(total);
    (at(p), if p + 1 == parts { total } else { at(p + 1) })
}

/// Run `f(0)`, ..., `f(parts - 1)`, `f(0)` on this thread and the rest on its helpers; returns when all
/// are done. A panic in a part is raised again here.
pub(crate) fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 {
        f(0);
        return;
    }
    HELPERS.with(|h| {
        let mut h = h.borrow_mut();
        while h.workers.len() < parts - 1 {
            let i = h.workers.len() + 1;
            h.workers.push(Worker::spawn(i));
        }
        // SAFETY: the job is cleared and every part finished before this function returns, so the erased
        // lifetime never outlives `f`.
        let job: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        for w in &h.workers[..parts - 1] {
            w.post(job);
        }
        let mine = catch_unwind(AssertUnwindSafe(|| as_part(f, 0)));
        let mut failed = mine.is_err();
        for w in &h.workers[..parts - 1] {
            failed |= w.wait();
        }
        if failed {
            panic!("a kernel thread panicked");
        }
    });
}

thread_local! {
    static HELPERS: RefCell<Helpers> = const { RefCell::new(Helpers { workers: Vec::new() }) };
}

struct Helpers {
    workers: Vec<Worker>,
}

/// One helper thread and its mailbox.
struct Worker {
    shared: Arc<Mailbox>,
    handle: Option<JoinHandle<()>>,
    /// The helper's part index.
    part: usize,
}

struct Mailbox {
    /// Incremented for each job posted; the helper runs a job when it sees a new value.
    posted: AtomicU64,
    /// Set by the helper when the job posted last is done.
    done: AtomicU64,
    job: std::sync::Mutex<Option<&'static (dyn Fn(usize) + Sync)>>,
    panicked: AtomicBool,
    quit: AtomicBool,
}

impl Worker {
    fn spawn(part: usize) -> Self {
        let shared = Arc::new(Mailbox {
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            job: std::sync::Mutex::new(None),
            panicked: AtomicBool::new(false),
            quit: AtomicBool::new(false),
        });
        let mailbox = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name(format!("kernel-{part}"))
            .spawn(move || helper_loop(&mailbox, part))
            .ok();
        Worker {
            shared,
            handle,
            part,
        }
    }

    fn post(&self, job: &'static (dyn Fn(usize) + Sync)) {
        if self.handle.is_none() {
            // The thread could not be started: run the part here, at once.
            if catch_unwind(AssertUnwindSafe(|| as_part(job, self.part))).is_err() {
                self.shared.panicked.store(true, Ordering::Relaxed);
            }
            return;
        }
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        self.shared.posted.fetch_add(1, Ordering::Release);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
    }

    /// Wait for the job posted last; true if it panicked.
    fn wait(&self) -> bool {
        if self.handle.is_some() {
            let target = self.shared.posted.load(Ordering::Relaxed);
            let mut spins = 0u32;
            while self.shared.done.load(Ordering::Acquire) != target {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.shared.panicked.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        self.shared.posted.fetch_add(1, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn helper_loop(m: &Mailbox, part: usize) {
    let mut seen = 0u64;
    loop {
        // Spin for a moment (the next product of a step is microseconds away), then sleep until posted.
        let start = Instant::now();
        let mut posted = m.posted.load(Ordering::Acquire);
        while posted == seen {
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                thread::park_timeout(Duration::from_millis(50));
            }
            posted = m.posted.load(Ordering::Acquire);
        }
        seen = posted;
        if m.quit.load(Ordering::Acquire) {
            return;
        }
        let job = *m.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| as_part(job, part))).is_err()
        {
            m.panicked.store(true, Ordering::Relaxed);
        }
        m.done.store(seen, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn split_covers_everything_once_in_granules() {
        for (total, parts, granule) in [(512, 2, 5), (10, 2, 4), (7, 3, 1), (1, 2, 4), (513, 4, 4)]
        {
            let mut next = 0;
            for p in 0..parts {
                let (a, b) = split(total, parts, p, granule);
                assert_eq!(a, next, "{total} {parts} {granule}");
                assert!(b >= a);
                if p + 1 < parts {
                    assert_eq!(a % granule, 0);
                }
                next = b;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn parts_run_on_helpers_and_all_finish() {
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..1000 {
            run(3, &|p| {
                hits[p].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1000));
    }
}
