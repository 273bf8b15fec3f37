//! The library's error type. Every variant names the file, key or run at fault and, where it can, what is
//! valid; [`Error::kind`] tells bad input from a corrupt store and from a bug, which the binary maps to
//! distinct exit codes.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec file that does not parse or does not validate.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A data file or folder that cannot be read as MNIST.
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// An I/O failure on a named path.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The results store cannot be used as asked (missing, not a store, newer schema, not writable ...).
    #[error("results database {}: {msg}", path.display())]
    Store { path: PathBuf, msg: String },
    /// The store holds bits that do not match their hashes, or rows that contradict each other.
    #[error("corrupt store {}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// An SQLite failure, with the file it happened on when known.
    #[error("{}SQLite: {error}", path.as_ref().map(|p| format!("results database {}: ", p.display())).unwrap_or_default())]
    Sqlite {
        path: Option<PathBuf>,
        error: rusqlite::Error,
    },
    /// A request that cannot be honoured (an unknown run id, a bad combination of arguments ...).
    #[error("{0}")]
    Usage(String),
    /// This process no longer owns the run: another process took it over (see `store::queue`).
    #[error("run {run}: {msg}")]
    Lost { run: i64, msg: String },
    /// A broken assumption inside the tool: a bug to report, never the user's input.
    #[error(
        "internal error (a bug in mlp-runner; please report it with the command that caused it): {0}"
    )]
    Internal(String),
}

/// What kind of failure an [`Error`] is, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or an environment problem the user can fix (exit 2).
    Input,
    /// A store whose stored bits or rows are inconsistent (exit 3).
    Corrupt,
    /// A bug (exit 70, EX_SOFTWARE).
    Internal,
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        Error::Sqlite { path: None, error }
    }
}

impl Error {
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Sqlite {
                error: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.code == rusqlite::ErrorCode::DatabaseCorrupt => ErrorKind::Corrupt,
            _ => ErrorKind::Input,
        }
    }

    /// The same error naming `to` wherever it named `from` (a temporary file is the user's output file to
    /// the user).
    pub(crate) fn renamed(self, from: &std::path::Path, to: &std::path::Path) -> Self {
        let text = |s: String| s.replace(&from.display().to_string(), &to.display().to_string());
        let path = |p: PathBuf| if p == from { to.to_path_buf() } else { p };
        match self {
            Error::Io { path: p, error } => Error::Io {
                path: path(p),
                error: std::io::Error::new(error.kind(), text(error.to_string())),
            },
            Error::Data { path: p, msg } => Error::Data {
                path: path(p),
                msg: text(msg),
            },
            Error::Usage(msg) => Error::Usage(text(msg)),
            Error::Internal(msg) => Error::Internal(text(msg)),
            Error::Store { path: p, msg } => Error::Store {
                path: path(p),
                msg: text(msg),
            },
            other => other,
        }
    }

    /// Name the database file an SQLite error happened on, if it does not say yet.
    pub(crate) fn on_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Sqlite { path: None, error } => Error::Sqlite {
                path: Some(file.to_path_buf()),
                error,
            },
            other => other,
        }
    }
}

/// A problem in a spec, located as precisely as the parser allows: file, line, key.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub msg: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::text::clean(&self.file))?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{}`", crate::text::clean(key))?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for SpecError {}

/// A config value that does not validate: the dotted key at fault (`train.batch_size`) and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: &'static str,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.msg)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_name_the_file_and_kinds_pick_the_exit_code() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = Error::from(full).on_file(std::path::Path::new("results/results.db"));
        let text = e.to_string();
        assert!(
            text.starts_with("results database results/results.db: SQLite: ")
                && text.ends_with("database or disk is full"),
            "{text}"
        );
        assert_eq!(e.kind(), ErrorKind::Input);
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert_eq!(Error::from(corrupt).kind(), ErrorKind::Corrupt);
        assert_eq!(Error::internal("x").kind(), ErrorKind::Internal);
        assert!(
            Error::internal("x")
                .to_string()
                .contains("please report it")
        );
    }
}
