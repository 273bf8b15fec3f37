//! Run management: naming a run flexibly (id, full name, unique name prefix), tags, notes, soft deletes
//! (`rm`, `restore`) and `gc`, which removes deleted runs for good.
//!
//! Every write is one write transaction; a run that is `running` is never deleted, and `gc` removes only
//! runs deleted before it started. Imports `core` only through the store.

use rusqlite::{OptionalExtension, params};

use super::{RunStatus, Store, now};
use crate::error::{Error, Result};
use crate::text::clean;

/// The longest tag accepted.
pub const MAX_TAG_CHARS: usize = 100;
/// The longest note accepted.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// What `gc` removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Collected {
    pub runs: usize,
    /// Bytes of weights those runs held.
    pub weight_bytes: i64,
    /// The store's size on disk (the file and its WAL) before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Which runs a `resolve` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted runs only when nothing else matches (most commands).
    Avoid,
    /// Deleted runs only (`restore`).
    Only,
}

/// A tag: 1 to [`MAX_TAG_CHARS`] characters, no blanks, commas, `/` or control characters, and not all
/// digits (a word of digits or with a `/` names a run).
pub fn check_tag(tag: &str) -> Result<()> {
    let n = tag.chars().count();
    let bad = tag
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',' || *c == '/');
    if n == 0 || n > MAX_TAG_CHARS || bad.is_some() || tag.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Usage(format!(
            "tag `{}`: a tag is 1 to {MAX_TAG_CHARS} characters without blanks, commas, `/` or control \
             characters, and not only digits (e.g. baseline, paper-v2)",
            clean(&crate::text::truncate(tag, 100))
        )));
    }
    Ok(())
}

impl Store {
    /// Does this store have the run-management columns (schema version 3)?
    pub fn manages_runs(&self) -> bool {
        self.version() >= 3
    }

    fn needs_v3(&self, what: &str) -> Result<()> {
        if self.manages_runs() {
            Ok(())
        } else {
            Err(self.store_err(format!(
                "is of schema version {}, which has no {what}; any command that writes to it (runner tag, \
                 runner note, or a spec trained into it) brings it to version {} first",
                self.version(),
                super::SCHEMA_VERSION
            )))
        }
    }

    /// The run a user names: an id (`12`), a full name (`lr_sweep/learning_rate=0.1,seed=1`) or a prefix
    /// of exactly one run's name (`lr_sweep/learning_rate=0.1,s`). An ambiguous name lists its matches.
    pub fn resolve(&self, given: &str, deleted: Deleted) -> Result<i64> {
        self.at(self.resolve_inner(given, deleted))
    }

    fn resolve_inner(&self, given: &str, deleted: Deleted) -> Result<i64> {
        let word = given.trim();
        if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
            let id: i64 = word.parse().map_err(|_| self.missing_run(i64::MAX))?;
            let exists: bool = self.connection().query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            return if exists {
                Ok(id)
            } else {
                Err(self.missing_run(id))
            };
        }
        // A run is named by its name in any experiment it belongs to; a deleted run or an attempt a later
        // one superseded (--force) only when no current run has the name.
        let hidden = format!(
            "CASE WHEN {} IS NOT NULL THEN 1 WHEN {} IS NOT NULL THEN 2 ELSE 0 END",
            self.col_of("r", "deleted_at", 3),
            self.col_of("r", "superseded_by", 5)
        );
        // Exact names first, then prefixes; `substr` compares bytes exactly (no LIKE wildcards).
        let matches = |exact: bool| -> rusqlite::Result<Vec<(i64, String, String, i64)>> {
            let cond = if exact {
                "m.name = ?1"
            } else {
                "substr(m.name, 1, length(?1)) = ?1"
            };
            self.connection()
                .prepare(&format!(
                    "SELECT r.id, min(m.name), r.status, {hidden} FROM {} m JOIN runs r ON r.id = m.run_id
                     WHERE {cond} GROUP BY r.id ORDER BY r.id LIMIT 51",
                    self.members()
                ))?
                .query_map([word], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        };
        for exact in [true, false] {
            let all = matches(exact)?;
            let pick: Vec<_> = match deleted {
                Deleted::Only => all.into_iter().filter(|m| m.3 == 1).collect(),
                Deleted::Avoid => {
                    let live: Vec<_> = all.iter().filter(|m| m.3 == 0).cloned().collect();
                    if live.is_empty() { all } else { live }
                }
            };
            match pick.as_slice() {
                [] => continue,
                [(id, ..)] => return Ok(*id),
                many => {
                    let list: Vec<String> = many
                        .iter()
                        .take(20)
                        .map(|(id, name, status, hidden)| {
                            format!(
                                "  {id}  {}  ({status}{})",
                                clean(name),
                                match hidden {
                                    1 => ", deleted",
                                    2 => ", superseded by a later attempt",
                                    _ => "",
                                }
                            )
                        })
                        .collect();
                    let more = if many.len() > 20 {
                        format!("\n  ... and {} more", many.len() - 20)
                    } else {
                        String::new()
                    };
                    return Err(Error::Usage(format!(
                        "`{}` names {} runs; give one of their ids (or more of the name):\n{}{more}",
                        clean(&crate::text::truncate(word, 200)),
                        if many.len() > 50 {
                            "more than 50".to_string()
                        } else {
                            many.len().to_string()
                        },
                        list.join("\n")
                    )));
                }
            }
        }
        let what = match deleted {
            Deleted::Only => "deleted run",
            Deleted::Avoid => "run",
        };
        Err(Error::Usage(format!(
            "no {what} with the id or name `{}` in {}; `runner ls{}` lists them (a name may be given by a \
             prefix that only one run's name starts with)",
            clean(&crate::text::truncate(word, 200)),
            self.path().display(),
            if deleted == Deleted::Only {
                " --deleted"
            } else {
                ""
            }
        )))
    }

    /// The runs of an experiment (its members) in `status` (any when `None`), oldest first: the deleted
    /// ones (`deleted`), or those not deleted.
    pub fn experiment_runs(
        &self,
        experiment: &str,
        status: Option<RunStatus>,
        deleted: bool,
    ) -> Result<crate::store::Table> {
        self.select(
            &format!(
                "SELECT r.id FROM {} m JOIN runs r ON r.id = m.run_id
                 WHERE m.experiment = ?1 AND (?2 IS NULL OR r.status = ?2) AND {} IS {} NULL
                 ORDER BY r.id",
                self.members(),
                self.col_of("r", "deleted_at", 3),
                if deleted { "NOT" } else { "" }
            ),
            &[&experiment, &status.map(|s| s.as_str())],
        )
    }

    /// Add (or with `remove`, take away) tags on runs, in one transaction. Returns how many (run, tag)
    /// pairs changed.
    pub fn tag(&self, runs: &[i64], tags: &[String], remove: bool) -> Result<usize> {
        self.needs_v3("tags")?;
        for t in tags {
            check_tag(t)?;
        }
        self.at((|| {
            let tx = self.write_tx()?;
            let mut changed = 0;
            for &id in runs {
                for t in tags {
                    changed += if remove {
                        tx.execute(
                            "DELETE FROM tags WHERE run_id = ?1 AND tag = ?2",
                            params![id, t],
                        )?
                    } else {
                        tx.execute(
                            "INSERT OR IGNORE INTO tags (run_id, tag) VALUES (?1, ?2)",
                            params![id, t],
                        )?
                    };
                }
            }
            tx.commit()?;
            Ok(changed)
        })())
    }

    /// A run's tags, sorted.
    pub fn tags(&self, run: i64) -> Result<Vec<String>> {
        if !self.manages_runs() {
            return Ok(Vec::new());
        }
        let tags = self
            .connection()
            .prepare("SELECT tag FROM tags WHERE run_id = ?1 ORDER BY tag")
            .and_then(|mut s| s.query_map([run], |r| r.get(0))?.collect());
        self.at(tags.map_err(Error::from))
    }

    /// Set (or with an empty text, clear) a run's note.
    pub fn set_note(&self, run: i64, note: &str) -> Result<()> {
        self.needs_v3("notes")?;
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(Error::Usage(format!(
                "a note is at most {MAX_NOTE_CHARS} characters"
            )));
        }
        let value = (!note.trim().is_empty()).then_some(note);
        self.at((|| {
            let tx = self.write_tx()?;
            tx.execute(
                "UPDATE runs SET note = ?2 WHERE id = ?1",
                params![run, value],
            )?;
            tx.commit()?;
            Ok(())
        })())
    }

    /// Mark runs deleted (hidden from `ls`, `compare`, plots and the views until restored or collected),
    /// in one transaction: if any of them is `running`, none is deleted. Returns how many were newly
    /// deleted.
    pub fn soft_delete(&self, runs: &[i64]) -> Result<usize> {
        self.needs_v3("soft deletes")?;
        self.at((|| {
            let tx = self.write_tx()?;
            for &id in runs {
                let status: Option<RunStatus> = tx
                    .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?;
                match status {
                    None => return Err(self.missing_run(id)),
                    Some(RunStatus::Running) => {
                        return Err(Error::Usage(format!(
                            "run {id} is running: it cannot be removed while a process trains it (nothing was \
                             removed); stop that process first, or remove it once it ends"
                        )));
                    }
                    Some(_) => {}
                }
            }
            let mut n = 0;
            let at = now();
            for &id in runs {
                n += tx.execute(
                    "UPDATE runs SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![id, at],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })())
    }

    /// Undo a soft delete. Returns how many runs were restored.
    pub fn restore(&self, runs: &[i64]) -> Result<usize> {
        self.needs_v3("soft deletes")?;
        self.at((|| {
            let tx = self.write_tx()?;
            let mut n = 0;
            for &id in runs {
                n += tx.execute(
                    "UPDATE runs SET deleted_at = NULL WHERE id = ?1 AND deleted_at IS NOT NULL",
                    [id],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })())
    }

    /// Remove deleted runs for good (their epochs, weights and tags with them), drop experiment rows left
    /// without runs, and VACUUM, reporting the bytes freed on disk.
    pub fn gc(&self) -> Result<Collected> {
        self.needs_v3("soft deletes")?;
        let size = |p: &std::path::Path| {
            let wal = std::path::PathBuf::from(format!("{}-wal", p.display()));
            std::fs::metadata(p).map_or(0, |m| m.len())
                + std::fs::metadata(wal).map_or(0, |m| m.len())
        };
        let mut report = Collected {
            bytes_before: size(self.path()),
            ..Collected::default()
        };
        self.at((|| {
            let tx = self.write_tx()?;
            let (runs, bytes): (i64, Option<i64>) = tx.query_row(
                "SELECT count(*), (SELECT sum(length(data)) FROM weights WHERE run_id IN
                    (SELECT id FROM runs WHERE deleted_at IS NOT NULL))
                 FROM runs WHERE deleted_at IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // An attempt removed for good no longer supersedes the one before it.
            tx.execute(
                "UPDATE runs SET superseded_by = NULL
                 WHERE superseded_by IN (SELECT id FROM runs WHERE deleted_at IS NOT NULL)",
                [],
            )?;
            // Foreign keys cascade to epochs, weights, tags and memberships.
            tx.execute("DELETE FROM runs WHERE deleted_at IS NOT NULL", [])?;
            tx.execute(
                "DELETE FROM experiments WHERE id NOT IN (SELECT DISTINCT experiment_id FROM runs)
                 AND name NOT IN (SELECT DISTINCT experiment FROM members)",
                [],
            )?;
            tx.commit()?;
            report.runs = runs as usize;
            report.weight_bytes = bytes.unwrap_or(0);
            Ok(())
        })())?;
        self.at(self
            .connection()
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(Error::from))?;
        report.bytes_after = size(self.path());
        Ok(report)
    }
}
