//! The error type of `vitalsink-query`.

/// Errors of the query engine and the `query` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, shard map or database errors of the shared helpers.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// A shard did not answer or failed while a query read it; the query fails (never a
    /// partial answer).
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard.
        shard: String,
        /// The server's or driver's message.
        message: String,
    },
    /// The archive could not be opened or read.
    #[error("archive: {0}")]
    Archive(String),
    /// The engine's error: invalid SQL, an unknown column, a memory limit.
    #[error(transparent)]
    Engine(#[from] datafusion::error::DataFusionError),
    /// The query needed more memory than the pool has, in an operator that cannot spill (a
    /// hash join's build side, for one) or cannot spill enough (a pool smaller than one
    /// working batch per partition); sorts and aggregations spill otherwise.
    #[error("the query needs more memory than --memory-bytes (QUERY_MEMORY_BYTES) allows: sorts and aggregations spill to disk, but a join's build side and each operator's working batch must fit; raise it or narrow the query ({0})")]
    Memory(String),
    /// The statement is not a read (see `engine::policy`); nothing was planned or run.
    /// Over Flight SQL: `PERMISSION_DENIED`.
    #[error("refused: {0}; {allowed}", allowed = crate::engine::policy::ALLOWED)]
    Refused(String),
    /// The statement ran past `--statement-timeout` and was stopped. Over Flight SQL:
    /// `DEADLINE_EXCEEDED`.
    #[error("the statement ran longer than --statement-timeout (QUERY_STATEMENT_TIMEOUT, {}) and was stopped", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// Every slot of `--max-concurrent-queries` stayed taken for `--queue-timeout`. Over
    /// Flight SQL: `RESOURCE_EXHAUSTED`.
    #[error("server busy: {running} statements running (--max-concurrent-queries), none finished within --queue-timeout ({})", humantime::format_duration(*waited))]
    Busy {
        /// The limit.
        running: usize,
        /// How long the statement waited.
        waited: std::time::Duration,
    },
    /// The client cancelled the statement (`CancelFlightInfo`). Over Flight SQL: `CANCELLED`.
    #[error("cancelled by the client")]
    Cancelled,
    /// `--lock NAME`: the dataset lock does not exist, its manifest is unreadable or does not
    /// match its checksum, or one of its objects cannot be read.
    #[error("lock {name}: {message}")]
    Lock {
        /// The lock's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the result failed.
    #[error("output: {0}")]
    Output(String),
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Engine(d) => d,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
