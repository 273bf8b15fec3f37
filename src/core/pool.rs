//! Threads for this crate's kernels (`--threads`): each training thread keeps its own helper threads,
//! which wait spinning for a short while between products and then sleep.
//!
//! A product is split into parts that write disjoint outputs and compute each output element whole, so
//! the split never changes a bit (see [`crate::core::kernel`]). A step at batch 10 makes products of tens of
//! microseconds, too short to start threads for: the helpers live as long as the thread that made them.
//!
//! On a shared host a helper may not be running when a product is posted (another process has its core).
//! `run_blocks` hands out small blocks to whichever thread asks next, so a slowed thread takes fewer, and
//! when this thread has done every block, a helper that has not started is not waited for.
//! Which thread computes a block never changes its bits.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
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
    LIMIT
        .with(Cell::get)
        .unwrap_or_else(threads)
        .min(max_parts)
        .max(1)
}

thread_local! {
    /// Set while this thread runs a part of [`run`].
    static IN_PART: Cell<bool> = const { Cell::new(false) };
    /// Threads for this thread's products while [`with_threads`] runs.
    static LIMIT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// `f()` with this thread's products split over `n` threads (1 to 4) instead of [`threads`]: what
/// `runner bench` compares one thread with two by, in one process. The bits are the same either way.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<usize>);
    impl Drop for Reset {
        fn drop(&mut self) {
            LIMIT.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(LIMIT.with(|c| c.replace(Some(n.clamp(1, 4)))));
    f()
}

/// Run `f(b)` for every block b < `blocks` on up to `parts` threads (at most 4). Each thread owns the
/// share of blocks a static split gives it and takes them in order from the front, as a static split
/// would (so that on a quiet machine each thread keeps its own blocks, and their data stays in its core's
/// cache from one call to the next); a thread done with its share takes the last untaken block of
/// another's, from the back. A thread that another process slows down thus ends up with fewer blocks
/// instead of the others waiting for its share. `f` must write disjoint outputs per block (then the
/// bits do not depend on which thread ran which block).
pub(crate) fn run_blocks(parts: usize, blocks: usize, f: &(dyn Fn(usize) + Sync)) {
    let parts = parts.min(blocks).min(MAX_PARTS);
    if parts <= 1 {
        (0..blocks).for_each(f);
        return;
    }
    // Part p's untaken blocks: front and back packed in one word, so that its owner (from the front) and
    // a thief (from the back) never take the same block.
    let shares: [AtomicU64; MAX_PARTS] = std::array::from_fn(|p| {
        let (a, b) = if p < parts {
            split(blocks, parts, p, 1)
        } else {
            (0, 0)
        };
        AtomicU64::new(pack(a, b))
    });
    run_parts(parts, true, &|p| {
        while let Some(b) = take(&shares[p], true) {
            f(b);
        }
        for q in (1..parts).map(|i| (p + i) % parts) {
            while let Some(b) = take(&shares[q], false) {
                f(b);
            }
        }
    });
}

/// Threads a product is split over at most (as [`configured_threads`] clamps).
const MAX_PARTS: usize = 4;

fn pack(front: usize, back: usize) -> u64 {
    ((front as u64) << 32) | back as u64
}

/// The next untaken block of a share, from its front or its back; `None` when none is left.
fn take(share: &AtomicU64, front: bool) -> Option<usize> {
    let mut v = share.load(Ordering::Acquire);
    loop {
        let (a, b) = ((v >> 32) as usize, (v & 0xffff_ffff) as usize);
        if a >= b {
            return None;
        }
        let (next, block) = if front {
            (pack(a + 1, b), a)
        } else {
            (pack(a, b - 1), b - 1)
        };
        match share.compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(block),
            Err(now) => v = now,
        }
    }
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
    run_parts(parts, false, f);
}

/// [`run`]; with `take_back`, a part no helper has started when this thread is done with its own is run
/// here instead (the helper then skips it). Only [`run_blocks`] takes back: there a part that starts late
/// finds the blocks taken and returns at once, while a fixed part taken back would run after this
/// thread's own, in series, when its helper was about to start it (measured: batch 10 on two threads
/// went from 1.74x to 1.51x one thread's speed when every part could be taken back).
fn run_parts(parts: usize, take_back: bool, f: &(dyn Fn(usize) + Sync)) {
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
            failed |= if take_back && w.take_back() {
                catch_unwind(AssertUnwindSafe(|| as_part(f, w.part))).is_err()
            } else {
                w.wait()
            };
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

/// A job's state in a [`Mailbox`]: nothing to run, posted (not started), running on the helper.
const IDLE: u8 = 0;
const POSTED: u8 = 1;
const RUNNING: u8 = 2;

struct Mailbox {
    /// Incremented for each job posted; the helper looks for a job when it sees a new value.
    posted: AtomicU64,
    /// [`IDLE`], [`POSTED`] or [`RUNNING`]: the helper starts a job only by moving it from POSTED to
    /// RUNNING, the poster takes it back only by moving it from POSTED to IDLE; one of the two wins.
    state: AtomicU8,
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
            state: AtomicU8::new(IDLE),
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
        self.shared.state.store(POSTED, Ordering::Release);
        self.shared.posted.fetch_add(1, Ordering::Release);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
    }

    /// Take back the job posted last if the helper has not started it (then it never will): true if
    /// taken, and the caller runs the part.
    fn take_back(&self) -> bool {
        if self.handle.is_none() {
            // Run at once by `post`.
            return false;
        }
        let taken = self
            .shared
            .state
            .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if taken {
            *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        taken
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
        // Start the job unless the poster took it back (or it was started already at an earlier wake-up).
        if m.state
            .compare_exchange(POSTED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let job = *m.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = job
                && catch_unwind(AssertUnwindSafe(|| as_part(job, part))).is_err()
            {
                m.panicked.store(true, Ordering::Relaxed);
            }
            m.state.store(IDLE, Ordering::Release);
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

    /// Every block runs exactly once whichever thread takes it, also when a helper is slow to start (its
    /// part taken back) and when one block is much slower than the others.
    #[test]
    fn blocks_run_once_each_on_any_thread() {
        let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..300 {
            with_threads(3, || {
                run_blocks(3, 37, &|b| {
                    if b == round % 37 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    hits[b].fetch_add(1, Ordering::Relaxed);
                })
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 300));
        // One thread: in order, on this thread.
        let order = std::sync::Mutex::new(Vec::new());
        with_threads(1, || {
            run_blocks(available(4), 5, &|b| order.lock().unwrap().push(b))
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
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
