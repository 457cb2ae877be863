//! Versioned schema migrations, applied idempotently on every shard.
//!
//! The SQL lives in `schemas/sql/NNNN_name.sql` and is compiled in. Each shard records what
//! it has applied in `vitalsink_schema_version`. Concurrent starts are serialised with a
//! transaction-level advisory lock, and each run applies every pending migration in one
//! transaction, so a shard is always at a recorded version.
//!
//! Migrations are applied by the schema's owner (schemas/ROLES.md). When nothing is pending
//! a run only reads (the version table, the hypertable's chunk interval) and takes the
//! advisory lock, so the least-privileged roles of migration 9 start on a current schema;
//! when something is pending and the role may not apply it, [`Error::MigrationsPending`]
//! says so, naming the shard.
//!
//! **Audit trail** (issue 26, [`crate::audit`]): a run that applied at least one migration
//! appends one `schema.migrate` entry ([`crate::audit::action::MIGRATE`]) to the trail on the
//! map shard (the first configured shard), with `details` = `{"shard", "from", "to",
//! "applied": [file names]}` (versions before and after, the files applied in order). On the
//! map shard itself the entry commits in the migrations' own transaction; for another shard
//! ([`migrate_recorded`], [`migrate_all`]) it is appended right after that shard's
//! transaction commits, provided the map shard has the trail (schema version 14 or later;
//! [`migrate_all`] migrates the map shard first, so it has). A run that applied nothing
//! appends nothing, so the binaries' start-up migrations stay quiet; and a role that may not
//! append to the trail cannot apply migrations either (it lacks the DDL rights).

use crate::audit::{self, action, Record};
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
    Migration {
        version: 9,
        name: "0009_roles.sql",
        sql: include_str!("../../schemas/sql/0009_roles.sql"),
    },
    Migration {
        version: 10,
        name: "0010_share_lock.sql",
        sql: include_str!("../../schemas/sql/0010_share_lock.sql"),
    },
    Migration {
        version: 11,
        name: "0011_chunk_check.sql",
        sql: include_str!("../../schemas/sql/0011_chunk_check.sql"),
    },
    Migration {
        version: 12,
        name: "0012_provenance.sql",
        sql: include_str!("../../schemas/sql/0012_provenance.sql"),
    },
    Migration {
        version: 13,
        name: "0013_delete_archived.sql",
        sql: include_str!("../../schemas/sql/0013_delete_archived.sql"),
    },
    Migration {
        version: 14,
        name: "0014_trial.sql",
        sql: include_str!("../../schemas/sql/0014_trial.sql"),
    },
];

/// The newest schema version this binary ships.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Advisory-lock key serialising migrations ("vitalsnk" as a big-endian integer).
const LOCK_KEY: i64 = 0x7669_7461_6c73_6e6b;

/// SQLSTATE `insufficient_privilege`: what a least-privileged role gets for DDL.
const INSUFFICIENT_PRIVILEGE: &tokio_postgres::error::SqlState =
    &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE;

/// Brings `shard` to [`latest_version`] and sets the hypertable's chunk interval to
/// `db.chunk_interval`. Returns the version the shard was at before.
///
/// When `shard` is the map shard ([`Shard::index`] 0, the first configured shard) and a
/// migration was applied, its audit entry commits with the migrations (module docs); for
/// another shard use [`migrate_recorded`], which appends the entry to the map shard.
///
/// With nothing pending, no DDL runs: the version table is only read, and the chunk interval
/// is changed only when it differs from `db.chunk_interval` and the role may act as the
/// hypertable's owner (TimescaleDB's `set_chunk_time_interval` requires it); another role
/// keeps the shard's interval and logs a warning.
///
/// # Errors
/// [`Error::SchemaTooNew`] when the shard is ahead of this binary,
/// [`Error::MigrationsPending`] when migrations are pending and the role lacks the privilege
/// to apply them (SQLSTATE 42501), [`Error::Migration`] when a statement fails otherwise
/// (nothing of that run is kept), [`Error::Pool`]/[`Error::Postgres`] when the shard cannot
/// be reached.
pub async fn migrate(shard: &Shard, db: &DatabaseConfig) -> Result<i32> {
    migrate_in(shard, db, shard.index == 0).await
}

/// [`migrate`] for `shard` in a deployment whose map shard is `map_shard`: when a migration
/// was applied to a shard other than the map shard, its audit entry is appended to the map
/// shard's trail right after the shard's transaction commits (skipped, with a warning, while
/// the map shard has no trail yet). Returns the version the shard was at before.
///
/// # Errors
/// As [`migrate`]; [`Error::Postgres`]/[`Error::Pool`]/[`Error::Audit`] when the entry
/// cannot be appended (the migrations stay applied; the error says so).
pub async fn migrate_recorded(
    shard: &Shard,
    map_shard: &Shard,
    db: &DatabaseConfig,
) -> Result<i32> {
    let is_map = shard.index == map_shard.index && shard.name == map_shard.name;
    let before = migrate_in(shard, db, is_map).await?;
    if !is_map && before < latest_version() {
        record_on_map(shard, map_shard, before).await?;
    }
    Ok(before)
}

/// The names of the migrations a run from version `before` applied.
fn applied_since(before: i32) -> Vec<&'static str> {
    MIGRATIONS
        .iter()
        .filter(|m| m.version > before)
        .map(|m| m.name)
        .collect()
}

/// The audit record of migrations applied to `shard` from version `before` to
/// [`latest_version`].
fn record_of(shard: &Shard, before: i32) -> Record {
    let to = latest_version();
    Record::new(
        action::MIGRATE,
        serde_json::json!({
            "shard": shard.name,
            "from": before,
            "to": to,
            "applied": applied_since(before),
        }),
    )
    .reason(Some(&format!(
        "schema upgrade: the shard was at version {before}, this binary needs version {to}"
    )))
}

/// Appends the entry of `shard`'s migrations from `before` to the trail on `map_shard`, if it
/// has one yet.
async fn record_on_map(shard: &Shard, map_shard: &Shard, before: i32) -> Result<()> {
    let has_trail: bool = map_shard
        .client()
        .await?
        .query_one("SELECT to_regclass('audit_log') IS NOT NULL", &[])
        .await
        .map_err(|e| map_shard.err(e))?
        .get(0);
    if !has_trail {
        tracing::warn!(
            shard = %shard.name, map_shard = %map_shard.name,
            "migrations applied, but the map shard has no audit trail yet (migrate it first): \
             not recorded"
        );
        return Ok(());
    }
    audit::append(map_shard, &record_of(shard, before))
        .await
        .map_err(|e| {
            Error::Audit(format!(
                "migrations {:?} were applied to shard {}, but their audit entry could not be \
                 appended on {}: {e}",
                applied_since(before),
                shard.name,
                map_shard.name
            ))
        })?;
    Ok(())
}

/// [`migrate`], appending the audit entry in the migrations' transaction when `record`.
async fn migrate_in(shard: &Shard, db: &DatabaseConfig, record: bool) -> Result<i32> {
    let mut client = shard.client().await?;
    let tx = client.transaction().await.map_err(|e| shard.err(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| shard.err(e))?;
    let row = tx
        .query_one(
            "SELECT current_user::text, to_regclass('vitalsink_schema_version') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| shard.err(e))?;
    let role: String = row.get(0);
    let has_versions: bool = row.get(1);
    let before: i32 = if has_versions {
        tx.query_one(
            "SELECT coalesce(max(version), 0) FROM vitalsink_schema_version",
            &[],
        )
        .await
        .map_err(|e| shard.err(e))?
        .get(0)
    } else {
        0
    };
    if before > latest_version() {
        return Err(Error::SchemaTooNew {
            shard: shard.name.clone(),
            found: before,
            known: latest_version(),
        });
    }
    let pending = |source: tokio_postgres::Error| Error::MigrationsPending {
        shard: shard.name.clone(),
        found: before,
        needed: latest_version(),
        role: role.clone(),
        source,
    };
    if !has_versions {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS vitalsink_schema_version (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| {
            if e.code() == Some(INSUFFICIENT_PRIVILEGE) {
                pending(e)
            } else {
                shard.err(e)
            }
        })?;
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > before) {
        let fail = |source: tokio_postgres::Error| {
            if source.code() == Some(INSUFFICIENT_PRIVILEGE) {
                return pending(source);
            }
            Error::Migration {
                shard: shard.name.clone(),
                version: m.version,
                name: m.name,
                source,
            }
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
    if record && before < latest_version() {
        audit::append_in(&tx, shard, &record_of(shard, before)).await?;
    }
    set_chunk_interval(&tx, shard, &role, db).await?;
    tx.commit().await.map_err(|e| shard.err(e))?;
    Ok(before)
}

/// Sets the hypertable's chunk interval to `db.chunk_interval` when it differs and `role`
/// may act as the hypertable's owner; otherwise, when it differs, logs a warning and keeps it.
async fn set_chunk_interval(
    tx: &tokio_postgres::Transaction<'_>,
    shard: &Shard,
    role: &str,
    db: &DatabaseConfig,
) -> Result<()> {
    let interval = format!("{} microseconds", db.chunk_interval.as_micros());
    let row = tx
        .query_opt(
            "SELECT d.time_interval = $1::text::interval, d.time_interval::text,
                    pg_has_role(c.relowner, 'USAGE')
               FROM timescaledb_information.dimensions d
               JOIN pg_class c ON c.oid = format('%I.%I', d.hypertable_schema, d.hypertable_name)::regclass
              WHERE d.hypertable_schema = current_schema() AND d.hypertable_name = 'measurements'
                AND d.dimension_number = 1",
            &[&interval],
        )
        .await
        .map_err(|e| shard.err(e))?;
    let Some(row) = row else {
        return Ok(());
    };
    let (same, current, owner): (Option<bool>, Option<String>, bool) =
        (row.get(0), row.get(1), row.get(2));
    if same == Some(true) {
        return Ok(());
    }
    if !owner {
        tracing::warn!(
            shard = %shard.name, %role, current = ?current,
            configured = %humantime::format_duration(db.chunk_interval),
            "database.chunk_interval differs from the hypertable's, which only its owner may \
             change (run `migrate` as the owner); keeping the hypertable's"
        );
        return Ok(());
    }
    tx.execute(
        "SELECT set_chunk_time_interval('measurements', $1::text::interval)",
        &[&interval],
    )
    .await
    .map_err(|e| shard.err(e))?;
    Ok(())
}

/// Runs [`migrate_recorded`] on every shard, in order, the first being the map shard (so
/// that its trail exists before the other shards' entries are appended to it).
///
/// # Errors
/// The first shard's error; shards before it stay migrated.
pub async fn migrate_all(shards: &[Shard], db: &DatabaseConfig) -> Result<()> {
    let Some(map_shard) = shards.first() else {
        return Ok(());
    };
    for s in shards {
        let before = migrate_recorded(s, map_shard, db).await?;
        tracing::info!(shard = %s.name, from = before, to = latest_version(), "schema up to date");
    }
    Ok(())
}
