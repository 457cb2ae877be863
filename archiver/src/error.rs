//! The error type of `vitalsink-archiver`.

/// Errors of the archiver. A chunk whose archiving fails is left in the database (and logged
/// as `failed`); the run goes on with the next chunk and exits non-zero at the end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or database set-up failed.
    #[error(transparent)]
    Common(#[from] vitalsink_common::Error),
    /// A PostgreSQL statement failed on a shard. Shown with the server's message and SQLSTATE
    /// ([`vitalsink_common::error::describe_postgres`]), e.g. `permission denied for table
    /// ingest_offsets (SQLSTATE 42501)` for a role lacking a privilege (schemas/ROLES.md).
    #[error(
        "shard {shard}: {}",
        vitalsink_common::error::describe_postgres(source)
    )]
    Postgres {
        /// Name of the shard.
        shard: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An object-store request failed (after object_store's own retries). Shown with its
    /// causes (`… error sending request: … invalid peer certificate: UnknownIssuer`): the
    /// client's own text stops at "error sending request".
    #[error("object store: {}", with_causes(.0))]
    Store(#[from] object_store::Error),
    /// Writing or reading Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// PostgreSQL's binary COPY stream did not have the expected shape.
    #[error("COPY stream of {chunk}: {message}")]
    Copy {
        /// The chunk being exported.
        chunk: String,
        /// What was wrong.
        message: String,
    },
    /// A written object does not match what was exported, or the chunk changed.
    #[error("verification of {object}: {message}")]
    Verify {
        /// The object path.
        object: String,
        /// What differs.
        message: String,
    },
    /// A manifest object could not be parsed.
    #[error("manifest {object}: {message}")]
    Manifest {
        /// The manifest object's path.
        object: String,
        /// What was wrong.
        message: String,
    },
    /// `verify` found problems in the archive.
    #[error("archive verification failed: {0} problem(s); see the log lines above")]
    ArchiveBad(usize),
    /// `migrate-archive` left objects under their old names (failed, waiting for `run`, or on
    /// a busy shard); running it again resumes.
    #[error("{0} object(s) or shard(s) not migrated yet; see the report, then run migrate-archive again")]
    MigrationIncomplete(usize),
    /// Some chunks could not be archived in this run (they stay in the database).
    #[error("{0} chunk(s) failed; they stay in the database and are retried by the next run")]
    ChunksFailed(usize),
    /// A shard's task of a run ended without a result (it panicked); the other shards go on.
    #[error("shard {shard}: its task ended abnormally: {message}")]
    ShardTask {
        /// Name of the shard.
        shard: String,
        /// The task's join error.
        message: String,
    },
    /// A bad command-line argument.
    #[error("argument {arg}: {message}")]
    Arg {
        /// The flag.
        arg: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Local I/O (the progress bar, a JSON document).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// JSON (de)serialisation.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a driver error with the shard's name: `.map_err(pg(&shard.name))`.
pub fn pg(shard: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |source| Error::Postgres {
        shard: shard.to_string(),
        source,
    }
}

/// `e` and each of its sources, `: `-separated, skipping a source whose text the previous
/// already contains.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}
