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
