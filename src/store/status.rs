//! A run's lifecycle: its status, as stored in `runs.status`, the transitions allowed, and the one
//! function that changes a stored status (`set_status`).
//!
//! ```text
//!   pending ──claim──> running ──last epoch──> completed | diverged
//!      ^                │  │  │
//!      │ retry          │  │  └──error──> failed ──retry (re-queue)──> pending
//!      └── failed       │  └──Ctrl-C, or owner gone──> interrupted ──claim──> running
//!                       └──a search's rung reached──> paused ──promoted, claim──> running
//!                                                        └──not promoted──> pruned
//! ```
//!
//! `completed`, `diverged` and `pruned` are final: nothing demotes them. Every status change in the store
//! goes through [`RunStatus::can_become`].

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Transaction, params};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunStatus {
    /// Queued; nothing trained yet.
    Pending,
    /// Claimed by a process (its owner), which is training it.
    Running,
    /// Every epoch trained; final weights stored.
    Completed,
    /// Stopped at the epoch whose loss was not finite; its weights then stored as final.
    Diverged,
    /// Stopped by an error (the `error` column says which); retried by the next invocation.
    Failed,
    /// Stopped by Ctrl-C, or its owner is gone; resumed from its last stored epoch.
    Interrupted,
    /// Trained to the epochs of its rung in an adaptive search; waits for the rung's decision with its
    /// checkpoint, and continues from it if promoted.
    Paused,
    /// Not promoted by a rung's decision: its weights at that rung's epochs are its final weights.
    Pruned,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Diverged,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Paused,
        RunStatus::Pruned,
    ];

    /// The statuses of a finished run: its results are final.
    pub const FINISHED: [RunStatus; 3] =
        [RunStatus::Completed, RunStatus::Diverged, RunStatus::Pruned];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Paused => "paused",
            RunStatus::Pruned => "pruned",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, diverged or pruned: trained to its end, never trained again unless forced.
    pub fn is_finished(self) -> bool {
        RunStatus::FINISHED.contains(&self)
    }

    /// May a run go from `self` to `next`?
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Pending | Interrupted | Paused, Running)
                | (
                    Running,
                    Completed | Diverged | Failed | Interrupted | Paused
                )
                | (Paused, Pruned)
                | (Failed, Pending)
        )
    }

    /// `('completed', 'diverged')` for an SQL `IN`: built from these constants only, never from input.
    pub(crate) fn sql_list(set: &[RunStatus]) -> String {
        let items: Vec<String> = set.iter().map(|s| format!("'{}'", s.as_str())).collect();
        format!("({})", items.join(", "))
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for RunStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for RunStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        RunStatus::parse(s).ok_or_else(|| {
            FromSqlError::Other(
                format!("unknown run status {:?}", crate::text::truncate(s, 40)).into(),
            )
        })
    }
}

/// Change a run's status from `from` to `to`, a transition [`RunStatus::can_become`] allows.
pub(crate) fn set_status(
    tx: &Transaction<'_>,
    id: i64,
    from: RunStatus,
    to: RunStatus,
) -> Result<()> {
    if !from.can_become(to) {
        return Err(Error::internal(format!(
            "run {id}: the queue tried to make a {from} run {to}"
        )));
    }
    let n = tx.execute(
        "UPDATE runs SET status = ?3 WHERE id = ?1 AND status = ?2",
        params![id, from, to],
    )?;
    if n != 1 {
        return Err(Error::internal(format!(
            "run {id}: expected it {from} to make it {to}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_match_the_schema() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
            // The schema's CHECK constraint (as version 4 widens it) lists the same names.
            let check = crate::store::schema::SCHEMA.replace(
                crate::store::schema::STATUS_CHECK_V1,
                crate::store::schema::STATUS_CHECK_V4,
            );
            assert!(check.contains(&format!("'{}'", s.as_str())), "{s}");
        }
        assert_eq!(RunStatus::parse("done"), None);
    }

    #[test]
    fn finished_runs_are_never_demoted() {
        for from in RunStatus::FINISHED {
            for to in RunStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(RunStatus::Running.can_become(RunStatus::Completed));
        assert!(RunStatus::Interrupted.can_become(RunStatus::Running));
        assert!(!RunStatus::Pending.can_become(RunStatus::Completed));
        assert!(RunStatus::Paused.can_become(RunStatus::Pruned));
        assert!(!RunStatus::Pruned.can_become(RunStatus::Running));
    }
}
