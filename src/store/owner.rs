//! Who owns a run: the process that claimed it, identified well enough to tell, from another process,
//! whether that owner can still be alive.
//!
//! A pid alone is not enough: pids are reused, and a process in another pid namespace (another container
//! on the same host) has its own. So an owner is its host, its pid, and `start`: the kernel's boot id, the
//! process's pid namespace and its start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
//! On the same host, boot and namespace, the owner is alive exactly when a process with that pid and that
//! start time exists. Elsewhere only its heartbeat tells (see [`super::queue`]).
//!
//! A scheduler task (`task`, e.g. `slurm:4242:shard 1/4`) names the unit a cluster retries: a retried task
//! of the same shard of the same job is the run's owner come back, so the old attempt cannot be alive.

use crate::core::envelope::hostname;

/// The identity of a process that owns (or owned) a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
    /// `<boot id>/<pid namespace>/<start ticks>`; `None` where `/proc` cannot tell (or for runs stored
    /// before schema version 2).
    pub start: Option<String>,
    /// The scheduler task this process runs as, if any.
    pub task: Option<String>,
}

impl Owner {
    /// This process, running as scheduler task `task` (if any).
    pub fn this_process(task: Option<String>) -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            host: hostname(),
            start: process_start(pid),
            task,
        }
    }

    /// Is the owner stored as (`pid`, `host`, `start`) this process?
    pub(crate) fn is(&self, pid: u32, host: Option<&str>, start: Option<&str>) -> bool {
        pid == self.pid && host == Some(self.host.as_str()) && start == self.start.as_deref()
    }

    /// Can the owner stored as (`pid`, `host`, `start`, `task`) still be alive, as far as `me` can tell
    /// without its heartbeat? `Some(false)`: certainly gone; `Some(true)`: certainly alive; `None`: cannot
    /// tell from here (another host or pid namespace), the heartbeat decides.
    pub(crate) fn judge(
        me: &Owner,
        pid: Option<i64>,
        host: Option<&str>,
        start: Option<&str>,
        task: Option<&str>,
    ) -> Option<bool> {
        let Some(pid) = pid.and_then(|p| u32::try_from(p).ok()) else {
            return Some(false);
        };
        if me.is(pid, host, start) {
            return Some(true);
        }
        // A retried attempt of the same scheduler task: the earlier attempt is over.
        if let (Some(t), Some(mine)) = (task, me.task.as_deref())
            && t == mine
        {
            return Some(false);
        }
        if host != Some(me.host.as_str()) {
            return None;
        }
        match (start, me.start.as_deref()) {
            (Some(theirs), Some(mine)) => {
                let (their_ns, _) = theirs.rsplit_once('/')?;
                let (my_ns, _) = mine.rsplit_once('/')?;
                if their_ns != my_ns {
                    // Another boot of this host is certainly over; another pid namespace cannot be seen.
                    let boot = |s: &str| s.split('/').next().map(str::to_string);
                    return if boot(theirs) != boot(mine) {
                        Some(false)
                    } else {
                        None
                    };
                }
                Some(process_start(pid).as_deref() == Some(theirs))
            }
            // A run stored before owners had a start time: the pid is all there is, where `/proc`
            // shows it. Without `/proc` (macOS, Windows: no owner has a start time there) the heartbeat
            // decides.
            (None, _) if has_proc() => Some(std::path::Path::new(&format!("/proc/{pid}")).exists()),
            (None, _) => None,
            (Some(_), None) => None,
        }
    }
}

/// Is a process with this pid alive on this host? (Where `/proc` cannot tell, it is taken as alive: a
/// caller never removes what a live process may use.)
pub fn pid_alive(pid: u32) -> bool {
    if !has_proc() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Does this system show its processes in `/proc` (Linux)?
fn has_proc() -> bool {
    std::path::Path::new("/proc/self").exists()
}

/// `<boot id>/<pid namespace>/<start ticks>` of process `pid`, read from `/proc`.
fn process_start(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; the start time is field 22, so the 20th after the name.
    let ticks = after.split_whitespace().nth(19)?;
    Some(format!("{}/{}/{ticks}", boot.trim(), ns.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_alive_and_a_reused_pid_is_not_its_owner() {
        let me = Owner::this_process(None);
        let start = me.start.clone().expect("Linux /proc");
        assert_eq!(
            Owner::judge(&me, Some(me.pid as i64), Some(&me.host), Some(&start), None),
            Some(true)
        );
        // Our parent is alive; with a start time that is not its own, it is another process.
        let parent = std::os::unix::process::parent_id();
        let parent_start = process_start(parent).unwrap();
        let judge =
            |start: &str| Owner::judge(&me, Some(parent as i64), Some(&me.host), Some(start), None);
        assert_eq!(judge(&parent_start), Some(true));
        let (prefix, _) = parent_start.rsplit_once('/').unwrap();
        assert_eq!(judge(&format!("{prefix}/1")), Some(false), "a reused pid");
        // Another boot of this host: gone. Another host: cannot tell.
        assert_eq!(judge("other-boot/pid:[1]/5"), Some(false));
        assert_eq!(
            Owner::judge(&me, Some(1), Some("elsewhere"), Some("b/n/1"), None),
            None
        );
        // A retried attempt of the same task takes over at once, on any host.
        let task = Owner::this_process(Some("slurm:7:shard 1/4".into()));
        assert_eq!(
            Owner::judge(
                &task,
                Some(1),
                Some("elsewhere"),
                None,
                Some("slurm:7:shard 1/4")
            ),
            Some(false)
        );
    }
}
