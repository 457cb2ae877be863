//! Versioned schema migrations, applied idempotently on every shard.
//!
//! The SQL lives in `schemas/sql/NNNN_name.sql` and is compiled in. Each shard records what
//! it has applied in `vitalsink_schema_version`. Concurrent starts are serialised with a
//! transaction-level advisory lock, and each run applies every pending migration in one
//! transaction, so a shard is always at a recorded version.

use crate::config::DatabaseConfig;
use crate::db::Shard;
use crate::error::{Error, Result};

/// One migration: version, file name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Schema version it brings the shard to.
    pub version: i32,
    /// File name under `schemas/sql/`.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_measurements.sql",
        sql: include_str!("../../schemas/sql/0001_measurements.sql"),
    },
    Migration {
        version: 2,
        name: "0002_ingest_offsets.sql",
        sql: include_str!("../../schemas/sql/0002_ingest_offsets.sql"),
    },
    Migration {
        version: 3,
        name: "0003_archive_log.sql",
        sql: include_str!("../../schemas/sql/0003_archive_log.sql"),
    },
    Migration {
        version: 4,
        name: "0004_archive_log_steps.sql",
        sql: include_str!("../../schemas/sql/0004_archive_log_steps.sql"),
    },
    Migration {
        version: 5,
        name: "0005_archive_log_renamed.sql",
        sql: include_str!("../../schemas/sql/0005_archive_log_renamed.sql"),
    },
    Migration {
        version: 6,
        name: "0006_shard_map.sql",
        sql: include_str!("../../schemas/sql/0006_shard_map.sql"),
    },
    Migration {
        version: 7,
        name: "0007_shard_moves.sql",
        sql: include_str!("../../schemas/sql/0007_shard_moves.sql"),
    },
    Migration {
        version: 8,
        name: "0008_online_moves.sql",
        sql: include_str!("../../schemas/sql/0008_online_moves.sql"),
    },
];

/// The newest schema version this binary ships.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Advisory-lock key serialising migrations ("vitalsnk" as a big-endian integer).
const LOCK_KEY: i64 = 0x7669_7461_6c73_6e6b;

/// Brings `shard` to [`latest_version`] and sets the hypertable's chunk interval to
/// `db.chunk_interval`. Returns the version the shard was at before.
///
/// # Errors
/// [`Error::SchemaTooNew`] when the shard is ahead of this binary, [`Error::Migration`] when a
/// statement fails (nothing of that run is kept), [`Error::Pool`]/[`Error::Postgres`] when the
/// shard cannot be reached.
pub async fn migrate(shard: &Shard, db: &DatabaseConfig) -> Result<i32> {
    let mut client = shard.client().await?;
    let tx = client.transaction().await.map_err(|e| shard.err(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| shard.err(e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vitalsink_schema_version (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| shard.err(e))?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM vitalsink_schema_version",
            &[],
        )
        .await
        .map_err(|e| shard.err(e))?;
    let before: i32 = row.get(0);
    if before > latest_version() {
        return Err(Error::SchemaTooNew {
            shard: shard.name.clone(),
            found: before,
            known: latest_version(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > before) {
        let fail = |source| Error::Migration {
            shard: shard.name.clone(),
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO vitalsink_schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(fail)?;
        tracing::info!(shard = %shard.name, version = m.version, name = m.name, "applied migration");
    }
    let interval = format!("{} microseconds", db.chunk_interval.as_micros());
    tx.execute(
        "SELECT set_chunk_time_interval('measurements', $1::text::interval)",
        &[&interval],
    )
    .await
    .map_err(|e| shard.err(e))?;
    tx.commit().await.map_err(|e| shard.err(e))?;
    Ok(before)
}

/// Runs [`migrate`] on every shard, in order.
///
/// # Errors
/// The first shard's error; shards before it stay migrated.
pub async fn migrate_all(shards: &[Shard], db: &DatabaseConfig) -> Result<()> {
    for s in shards {
        let before = migrate(s, db).await?;
        tracing::info!(shard = %s.name, from = before, to = latest_version(), "schema up to date");
    }
    Ok(())
}
