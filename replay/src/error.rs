//! The error type of `vitalsink-replay`.

use std::path::PathBuf;

/// Everything that stops a replay, a synthetic run or a truth computation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or Kafka set-up through `vitalsink-common` failed.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// A Kafka client could not be built, or a record was not delivered.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A recording does not have the shape its format requires.
    #[error("{}:{line}: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The data directory holds none of the expected recordings (run `dev/fetch-data`).
    #[error("no recordings under {}: run dev/fetch-data (it prints the directory)", .0.display())]
    NoRecordings(PathBuf),
    /// A command-line value is out of range.
    #[error("invalid argument {name}: {detail}")]
    Argument {
        /// The flag.
        name: &'static str,
        /// Why.
        detail: String,
    },
    /// JSON output could not be written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Parse`] for `path` at 1-based `line`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, detail: impl std::fmt::Display) -> Self {
        Self::Parse {
            path: path.into(),
            line,
            detail: detail.to_string(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
