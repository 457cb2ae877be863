//! The error type of `vitalsink-reshard`.

/// Errors of the `reshard` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration, shard map or database errors of the shared helpers.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// The change cannot be made with jump-hash routing, or names a shard wrongly. Nothing
    /// was changed.
    #[error("cannot {action}: {message}")]
    Refused {
        /// What was asked, e.g. `remove shard shard1`.
        action: String,
        /// Why it cannot be done.
        message: String,
    },
    /// A participant's rows on its old and new shard disagree.
    #[error("verification of participant {participant}: {message}")]
    Verify {
        /// The participant.
        participant: String,
        /// What differs, and what was done about it.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
