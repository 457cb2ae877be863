//! `database.pooling` and `database.direct_urls`: the shards behind a connection pooler such
//! as PgBouncer (README, "PgBouncer").
//!
//! Behind a **transaction** pool (PgBouncer `pool_mode = transaction`) a client keeps a server
//! connection only for one transaction; whatever a session keeps beyond it (session advisory
//! locks, `SET`, `LISTEN`, SQL `PREPARE`, `WITH HOLD` cursors) stays on a server connection that
//! the next client gets (pgbouncer.org/features.html). Every vitalsink connection keeps its
//! state inside transactions (`pg_advisory_xact_lock`, `SET LOCAL`, temporary tables created
//! in the transaction that uses them, exported snapshots held by the open transaction) except
//! one: the bulk lock ([`crate::db::BULK_LOCK_KEY`]), a session advisory lock the archiver
//! holds on a shard for a whole run and `reshard` for a whole move, across many transactions
//! on purpose. That connection goes to `database.direct_urls.<shard>`, which reaches the
//! shard's PostgreSQL without the pooler; [`DatabaseConfig::require_sessions`] refuses to
//! start such a command without it.
//!
//! Protocol-level named prepared statements (tokio-postgres prepares every statement given
//! as text; the ingest worker caches three per connection) need PgBouncer's
//! `max_prepared_statements` above 0 (added in 1.21, default 200 from 1.24).

use serde::{Deserialize, Serialize};

use super::DatabaseConfig;
use crate::error::{Error, Result};

/// `database.pooling`: what the shards' `url`s reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// PostgreSQL itself, or a session pool (PgBouncer `pool_mode = session`): every
    /// connection is a session of its own.
    #[default]
    None,
    /// A transaction pool (PgBouncer `pool_mode = transaction`, `max_prepared_statements`
    /// > 0): a connection is a session only for the length of one transaction.
    Transaction,
}

/// A connection that must be a PostgreSQL session of its own, for [`DatabaseConfig::require_sessions`].
#[derive(Debug, Clone, Copy)]
pub struct SessionUse {
    /// The command, for the message (`archiver run`).
    pub who: &'static str,
    /// What it keeps in the session, and for how long.
    pub why: &'static str,
}

/// The bulk lock ([`crate::db::BULK_LOCK_KEY`]) as the archiver's `run`, `daemon` and
/// `migrate-archive` hold it.
pub const ARCHIVER_BULK_LOCK: SessionUse = SessionUse {
    who: "the archiver",
    why: "holds the session advisory lock BULK_LOCK_KEY on each shard for the whole run",
};

/// The bulk lock as `reshard` holds it for a whole move.
pub const RESHARD_BULK_LOCK: SessionUse = SessionUse {
    who: "reshard",
    why: "holds the session advisory lock BULK_LOCK_KEY on every shard for the whole move",
};

impl DatabaseConfig {
    /// The connection string reaching shard `name`'s PostgreSQL without the pooler
    /// (`database.direct_urls.<name>`), if configured.
    pub fn direct_url(&self, name: &str) -> Option<&str> {
        self.direct_urls.get(name).map(String::as_str)
    }

    /// Start-up check of a command that keeps a session on each of `shards` (names): under
    /// `pooling = "transaction"` every one needs `database.direct_urls.<name>`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `database.direct_urls.<name>` of the first shard without one.
    pub fn require_sessions<'a>(
        &self,
        shards: impl IntoIterator<Item = &'a str>,
        use_: SessionUse,
    ) -> Result<()> {
        if self.pooling != Pooling::Transaction {
            return Ok(());
        }
        for name in shards {
            if self.direct_url(name).is_none() {
                return Err(Error::Config {
                    key: format!("database.direct_urls.{name}"),
                    message: format!(
                        "database.pooling = \"transaction\": {} {}, which a transaction pool \
                         would leave on a server connection other clients get; give shard \
                         {name}'s PostgreSQL address that bypasses the pooler",
                        use_.who, use_.why
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks `direct_urls` for [`super::Config::validate`]: each must be a connection string.
    pub(super) fn check_pooling(&self) -> std::result::Result<(), (String, String)> {
        for (name, url) in &self.direct_urls {
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                return Err((
                    format!("database.direct_urls.{name}"),
                    format!("not a libpq connection string: {e}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_behind_a_transaction_pool_needs_a_direct_url() {
        let mut db = DatabaseConfig::default();
        assert!(db.require_sessions(["a"], ARCHIVER_BULK_LOCK).is_ok());
        db.pooling = Pooling::Transaction;
        match db.require_sessions(["a", "b"], RESHARD_BULK_LOCK) {
            Err(Error::Config { key, message }) => {
                assert_eq!(key, "database.direct_urls.a");
                assert!(message.contains("reshard"), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        db.direct_urls.insert("a".into(), "host=h port=5432".into());
        match db.require_sessions(["a", "b"], RESHARD_BULK_LOCK) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "database.direct_urls.b"),
            other => panic!("expected a config error, got {other:?}"),
        }
        db.direct_urls.insert("b".into(), "host=h port=5433".into());
        assert!(db.require_sessions(["a", "b"], RESHARD_BULK_LOCK).is_ok());
        db.direct_urls.insert("c".into(), "not a dsn".into());
        assert_eq!(db.check_pooling().unwrap_err().0, "database.direct_urls.c");
    }
}
