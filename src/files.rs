//! Writing output files safely: never over the results store in use or another input, never over an
//! SQLite database unless forced, and never half-written (a temporary file beside the target, renamed
//! into place once complete).
//!
//! Imports only `error`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Does the file at `path` start like an SQLite database? (`false` for a missing or short file.)
fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    // Only a regular file is read: opening a pipe (`/dev/stdout`) for reading would block.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_MAGIC
}

/// Is `a` the same file as `b` (or, if `b` does not exist yet, would creating `b` create `a`)?
/// On Unix, two existing paths are the same file when their device and inode are; elsewhere (Windows),
/// when their canonical paths are (hard links to one file then count as two).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => same_existing(a, &x, b, &y),
        _ => match (absolute(a), absolute(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

#[cfg(unix)]
fn same_existing(_: &Path, x: &std::fs::Metadata, _: &Path, y: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    x.dev() == y.dev() && x.ino() == y.ino()
}

#[cfg(not(unix))]
fn same_existing(a: &Path, _: &std::fs::Metadata, b: &Path, _: &std::fs::Metadata) -> bool {
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// `path` made absolute, its folder resolved through symbolic links (the file itself need not exist).
fn absolute(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(name))
}

/// The database whose side file `path` would be (`X-wal`, `X-shm` or `X-journal` of `X`), when `X` is an
/// existing SQLite database or one of `inputs`: SQLite deletes or replaces such a file when `X` is next
/// opened, so an output written there is destroyed.
pub fn side_file_of(path: &Path, inputs: &[&Path]) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let base = ["-wal", "-shm", "-journal"]
        .iter()
        .find_map(|s| name.strip_suffix(s))?;
    let db = path.with_file_name(base);
    (is_sqlite_file(&db) || inputs.iter().any(|i| same_file(i, &db))).then_some(db)
}

/// What an output file must not replace.
#[derive(Debug, Clone, Default)]
pub struct Guard<'a> {
    /// The results store the command reads: never written over, `--force` or not (its `-wal` and
    /// `-shm` files neither).
    pub store: Option<&'a Path>,
    /// Other files the command reads: never written over.
    pub inputs: &'a [&'a Path],
    /// Replace an existing SQLite database (which is refused otherwise).
    pub force: bool,
}

impl Guard<'_> {
    /// Refuse `out` if writing it would destroy something this guard protects.
    pub fn check(&self, out: &Path) -> Result<()> {
        let refuse = |msg: String| Err(Error::Usage(format!("{}: {msg}", out.display())));
        if out.is_dir() {
            return refuse("is a folder; give the path of a file to write".into());
        }
        if let Some(store) = self.store {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let protected = PathBuf::from(format!("{}{suffix}", store.display()));
                if same_file(&protected, out) {
                    return refuse(format!(
                        "is the results store this command reads ({}); it is never written over, --force or \
                         not; choose another output path",
                        store.display()
                    ));
                }
            }
        }
        if let Some(db) = side_file_of(out, self.inputs) {
            return refuse(format!(
                "is a side file of the SQLite database {} (its write-ahead log, shared memory or journal), \
                 which SQLite removes or replaces when that database is next opened; choose another output \
                 path",
                db.display()
            ));
        }
        if let Some(input) = self.inputs.iter().find(|i| same_file(i, out)) {
            return refuse(format!(
                "is one of this command's inputs ({}); choose another output path",
                input.display()
            ));
        }
        if !self.force && is_sqlite_file(out) {
            return refuse(
                "is an SQLite database (a results store?); refusing to write over it. Choose another path, \
                 or pass --force to replace it"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Write `out` through `write`, which is given a temporary path in the same folder: the file appears
/// whole, by a rename, or not at all. `guard` is checked first. A special file (`/dev/stdout`, a pipe) is
/// written in place.
pub fn write_atomically(
    out: &Path,
    guard: &Guard<'_>,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    guard.check(out)?;
    // A device, a pipe or a socket (`-o /dev/stdout`) is written in place: renaming over it would replace
    // the special file itself.
    if std::fs::metadata(out).is_ok_and(|m| !m.is_file()) {
        return write(out);
    }
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", out.display())))?;
    // The temporary name ends with the target's, so its extension (which may choose a format) is kept.
    let tmp = out.with_file_name(format!(
        ".partial-{}-{}",
        std::process::id(),
        name.to_string_lossy()
    ));
    let result = write(&tmp)
        .map_err(|e| e.renamed(&tmp, out))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_never_replace_the_store_or_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let db = d.join("results.db");
        std::fs::write(&db, b"SQLite format 3\0rest").unwrap();
        let input = d.join("in.png");
        std::fs::write(&input, b"x").unwrap();
        let inputs = [input.as_path()];
        let guard = Guard {
            store: Some(&db),
            inputs: &inputs,
            force: true,
        };
        assert!(guard.check(&db).is_err(), "the store, even with force");
        assert!(guard.check(&d.join("./results.db")).is_err());
        assert!(guard.check(&d.join("results.db-wal")).is_err());
        assert!(guard.check(&input).is_err());
        assert!(guard.check(&d.join("model.safetensors")).is_ok());
        let other = d.join("other.db");
        std::fs::write(&other, b"SQLite format 3\0rest").unwrap();
        assert!(guard.check(&other).is_ok(), "forced");
        let unforced = Guard {
            force: false,
            ..guard
        };
        assert!(unforced.check(&other).is_err());
        // A side file of any SQLite database, or of an input, is never an output.
        for side in [
            "other.db-wal",
            "other.db-shm",
            "other.db-journal",
            "in.png-wal",
        ] {
            assert!(guard.check(&d.join(side)).is_err(), "{side}");
        }
        assert!(guard.check(&d.join("notadb-wal")).is_ok());
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.bin");
        let r = write_atomically(&out, &Guard::default(), |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Usage("interrupted".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // An error about the temporary file names the output the user asked for.
        let r = write_atomically(&out, &Guard::default(), |tmp| {
            Err(Error::io(
                tmp,
                std::io::Error::other(format!("{} is full", tmp.display())),
            ))
        });
        let msg = r.unwrap_err().to_string();
        assert!(!msg.contains(".partial-") && msg.contains("x.bin"), "{msg}");
        write_atomically(&out, &Guard::default(), |tmp| {
            std::fs::write(tmp, b"whole").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"whole");
        // A special file is written in place, never replaced.
        let null = Path::new("/dev/null");
        write_atomically(null, &Guard::default(), |p| {
            assert_eq!(p, null);
            std::fs::write(p, b"x").map_err(|e| Error::io(p, e))
        })
        .unwrap();
        assert!(!std::fs::metadata(null).unwrap().is_file());
    }
}
