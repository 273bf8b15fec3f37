//! The library's error type: every variant names the file, key or run at fault and, where it can, what is valid.

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
    /// The results database cannot be used as asked.
    #[error("results database {}: {msg}", path.display())]
    Store { path: PathBuf, msg: String },
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
    /// A request that cannot be honoured (unknown run id, bad argument combination ...).
    #[error("{0}")]
    Usage(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sqlite(e)
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
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for SpecError {}
