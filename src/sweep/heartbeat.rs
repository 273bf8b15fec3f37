//! The heartbeat of a training process: one thread that, every `--heartbeat` seconds and whatever the
//! training is doing, tells the store that this process still owns its runs, and flags a run that
//! another process has taken over (its fencing token no longer holds) so that its worker stops.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::progress::Progress;
use crate::error::Error;
use crate::store::Store;

/// The runs this process owns, and a thread that beats for them: every `every` it refreshes their
/// heartbeat, and flags a run whose claim another process has taken over.
pub(super) struct Heartbeat {
    every: Duration,
    owned: Mutex<HashMap<i64, (i64, Arc<AtomicBool>)>>,
    done: Mutex<bool>,
    wake: Condvar,
}

impl Heartbeat {
    pub(super) fn new(every: Duration) -> Self {
        Heartbeat {
            every,
            owned: Mutex::new(HashMap::new()),
            done: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Start beating for `run` held with `token`; the flag is set if the run is lost.
    pub(super) fn own(&self, run: i64, token: i64) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        if let Ok(mut owned) = self.owned.lock() {
            owned.insert(run, (token, Arc::clone(&lost)));
        }
        lost
    }

    pub(super) fn release(&self, run: i64) {
        if let Ok(mut owned) = self.owned.lock() {
            owned.remove(&run);
        }
    }

    pub(super) fn stop(&self) {
        if let Ok(mut done) = self.done.lock() {
            *done = true;
        }
        self.wake.notify_all();
    }

    /// The beating thread's loop, until [`Heartbeat::stop`].
    pub(super) fn run(&self, db: &Path, progress: &dyn Progress) {
        let mut store = None;
        let mut reported = false;
        loop {
            let Ok(done) = self.done.lock() else { return };
            let Ok((done, _)) = self.wake.wait_timeout_while(done, self.every, |d| !*d) else {
                return;
            };
            if *done {
                return;
            }
            drop(done);
            let owned: Vec<(i64, i64, Arc<AtomicBool>)> = match self.owned.lock() {
                Ok(o) => o
                    .iter()
                    .map(|(r, (t, l))| (*r, *t, Arc::clone(l)))
                    .collect(),
                Err(_) => return,
            };
            if owned.is_empty() {
                continue;
            }
            if store.is_none() {
                store = Store::open(db).ok();
            }
            let Some(s) = &store else { continue };
            for (run, token, lost) in owned {
                match s.heartbeat(run, token) {
                    Ok(()) => {}
                    Err(Error::Lost { .. }) => lost.store(true, Ordering::SeqCst),
                    // A missed heartbeat only risks a takeover after `stale_after`; training goes on.
                    Err(e) if !reported => {
                        reported = true;
                        progress.log(&format!("warning: heartbeat of run {run} failed: {e}"));
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
