//! The error type of `vitalsink-trial`.

/// Errors of the `trial` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or database errors of the shared helpers.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// Archive errors (reading, rewriting or verifying objects).
    #[error(transparent)]
    Archive(#[from] vitalsink_archiver::Error),
    /// A flag's value is unusable; nothing was changed.
    #[error("--{arg}: {message}")]
    Arg {
        /// The flag, without dashes.
        arg: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The command cannot be carried out as asked; nothing was changed.
    #[error("cannot {action}: {message}")]
    Refused {
        /// What was asked, e.g. `reinstate participant p1`.
        action: String,
        /// Why not.
        message: String,
    },
    /// A check found a difference: the audit chain is broken, or a lock's objects no longer
    /// match. The report was printed; the exit code is 1.
    #[error("{0}")]
    Failed(String),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Common`] for a driver error on `shard`.
    pub fn pg(shard: &vitalsink_common::db::Shard, e: tokio_postgres::Error) -> Self {
        Error::Common(shard.err(e))
    }
}
