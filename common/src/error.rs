//! The error type of `vitalsink-common`.

/// Errors raised by configuration loading, migrations and the shared Kafka/PostgreSQL helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration key is unknown, mistyped or out of range.
    #[error("configuration key `{key}`: {message}")]
    Config {
        /// Dotted path of the key, e.g. `database.pool_size` or `shards[1].name`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A PostgreSQL statement or connection failed. Shown with the server's message and
    /// SQLSTATE ([`describe_postgres`]).
    #[error("shard {shard}: {}", describe_postgres(source))]
    Postgres {
        /// Name of the shard.
        shard: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A connection could not be taken from a shard's pool.
    #[error("shard {shard}: connection pool: {message}")]
    Pool {
        /// Name of the shard.
        shard: String,
        /// The pool's error, as text.
        message: String,
    },
    /// A migration failed; the shard is left at the previous version.
    #[error(
        "shard {shard}: migration {version} ({name}) failed: {}",
        describe_postgres(source)
    )]
    Migration {
        /// Name of the shard.
        shard: String,
        /// Version that failed.
        version: i32,
        /// Its file name.
        name: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A shard's recorded schema version is newer than this binary knows.
    #[error("shard {shard}: schema version {found} is newer than this binary's {known}; upgrade the binary")]
    SchemaTooNew {
        /// Name of the shard.
        shard: String,
        /// Version recorded on the shard.
        found: i32,
        /// Newest version this binary ships.
        known: i32,
    },
    /// Migrations are pending on a shard and the connected role may not apply them
    /// (SQLSTATE 42501): a least-privileged role of schemas/ROLES.md started before the
    /// schema's owner migrated the shard.
    #[error(
        "shard {shard}: schema migrations are pending (the shard is at version {found}, this \
         binary needs {needed}) and role {role} may not apply them ({}); they must be applied \
         by the schema's owner, e.g. with the `migrate` subcommand connected as the owner (see \
         schemas/ROLES.md)",
        describe_postgres(source)
    )]
    MigrationsPending {
        /// Name of the shard.
        shard: String,
        /// Version recorded on the shard (0: none).
        found: i32,
        /// Newest version this binary ships.
        needed: i32,
        /// The role connected (`current_user`).
        role: String,
        /// The refused statement's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A Kafka client operation failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka cluster refused or could not be reached at start-up (TLS handshake, SASL
    /// authentication, brokers down), with librdkafka's own reason.
    #[error("kafka {brokers}: {message}")]
    KafkaConnect {
        /// `kafka.brokers`, the connection that failed.
        brokers: String,
        /// librdkafka's reason, e.g. `SASL authentication error: …` or `SSL handshake failed: …`.
        message: String,
    },
    /// Creating a Kafka topic failed.
    #[error("kafka: creating topic {topic}: {message}")]
    TopicCreate {
        /// The topic.
        topic: String,
        /// The broker's answer.
        message: String,
    },
    /// Logging could not be set up.
    #[error("logging: {0}")]
    Telemetry(String),
    /// The configured shard list disagrees with the shard map ([`crate::shardmap`]).
    #[error("shard map: {0}")]
    ShardMap(String),
    /// An audit entry could not be made ([`crate::audit`]).
    #[error("audit trail: {0}")]
    Audit(String),
}

/// A driver error as an operator needs it: for a server error its severity, message and
/// SQLSTATE (`ERROR: new row for relation "…" violates check constraint "c" (SQLSTATE
/// 23514)`); otherwise the driver's text with its cause (`error connecting to server:
/// Connection refused (os error 111)`). tokio-postgres's own `Display` shows only `db error`
/// for the former. The server's DETAIL is left out: for a constraint it quotes the failing
/// row, a participant's health data, which does not belong in logs.
pub fn describe_postgres(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    match std::error::Error::source(e) {
        Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying can fix this error ([`crate::retry`] gives the rule): a driver error
    /// by its SQLSTATE, a pool that could not connect as transient, a bad configuration, a
    /// too-new schema, migrations the role may not apply or a refused topic as permanent.
    pub fn class(&self) -> crate::retry::Class {
        use crate::retry::{kafka_class, postgres_class, Class, ProduceClass};
        match self {
            Error::Postgres { source, .. } | Error::Migration { source, .. } => {
                postgres_class(source)
            }
            Error::Pool { .. } => Class::Transient,
            Error::Kafka(e) => match kafka_class(e) {
                ProduceClass::Transient => Class::Transient,
                _ => Class::Permanent,
            },
            Error::Config { .. }
            | Error::SchemaTooNew { .. }
            | Error::MigrationsPending { .. }
            | Error::TopicCreate { .. }
            | Error::KafkaConnect { .. }
            | Error::Telemetry(_)
            | Error::ShardMap(_)
            | Error::Audit(_) => Class::Permanent,
        }
    }

    /// A short machine-readable kind for metric labels: the SQLSTATE of a driver error
    /// (`42501`), else the variant (`pool`, `config`, …).
    pub fn kind(&self) -> String {
        match self {
            Error::Postgres { source, .. } | Error::Migration { source, .. } => source
                .code()
                .map_or_else(|| "io".to_string(), |c| c.code().to_string()),
            Error::Pool { .. } => "pool".into(),
            Error::Kafka(e) => e
                .rdkafka_error_code()
                .map_or_else(|| "kafka".to_string(), |c| format!("{c:?}")),
            Error::Config { .. } => "config".into(),
            Error::SchemaTooNew { .. } => "schema_too_new".into(),
            Error::MigrationsPending { .. } => "migrations_pending".into(),
            Error::TopicCreate { .. } => "topic_create".into(),
            Error::KafkaConnect { .. } => "kafka_connect".into(),
            Error::Telemetry(_) => "telemetry".into(),
            Error::ShardMap(_) => "shard_map".into(),
            Error::Audit(_) => "audit".into(),
        }
    }

    /// Converts a figment extraction error into [`Error::Config`] naming the key.
    pub(crate) fn from_figment(e: &figment::Error) -> Self {
        use figment::error::Kind;
        let mut path: Vec<String> = e.path.clone();
        if let Kind::UnknownField(field, _) = &e.kind {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
        }
        let key = path.join(".");
        let origin = e
            .metadata
            .as_ref()
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        Error::Config {
            key: if key.is_empty() { "<root>".into() } else { key },
            message: format!("{}{origin}", e.kind),
        }
    }
}
