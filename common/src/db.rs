//! PostgreSQL helpers: one connection pool per shard.

use crate::config::{DatabaseConfig, ShardConfig};
use crate::error::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

/// Key of the session advisory lock held on a shard by whoever changes its rows in bulk: the
/// archiver while it works on the shard (`archiver run`, `migrate-archive`) and `reshard`
/// for a whole move. Whoever finds it taken skips the shard or stops ("vsarchiv" as ASCII).
pub const BULK_LOCK_KEY: i64 = 0x7673_6172_6368_6976;

/// Connections at most of a shard's direct pool ([`Shard::session_client`]): the bulk lock
/// takes one per process.
const DIRECT_POOL_SIZE: usize = 2;

/// A deadpool pool of at most `size` connections to `url`, TLS and login as every binary's
/// ([`crate::pgconn::settings`]), shown as `app` in `pg_stat_activity` unless the URL names
/// one; `key` names the URL in errors.
///
/// # Errors
/// [`Error::Config`] naming `key` when the connection string does not parse, a TLS file
/// cannot be used, or the pool cannot be built.
pub fn build_pool(
    url: &str,
    key: &str,
    db: &DatabaseConfig,
    size: usize,
    app: &str,
) -> Result<Pool> {
    let (pg, tls) = crate::pgconn::settings(url, key, db, app)?;
    // `Fast`: no statements run on recycling. `Clean` would run `pg_advisory_unlock_all()`
    // and `RESET ALL`, which behind a transaction pooler reach whichever server connection
    // the pooler gives, another client's (README, "PgBouncer").
    let mgr = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Config {
            key: key.to_string(),
            message: e.to_string(),
        })
}

/// A shard: its configured name, index in the routing order and connection pool.
#[derive(Clone)]
pub struct Shard {
    /// Index in the ordered shard list, i.e. what [`crate::routing::ShardRouter`] returns.
    pub index: usize,
    /// Configured name.
    pub name: String,
    /// Connection pool (`database.pool_size` connections at most).
    pub pool: Pool,
    /// Connections that bypass a pooler (`database.direct_urls.<name>`), for what must be a
    /// session of its own ([`Shard::session_client`]); at most 2 at once.
    direct: Option<Pool>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish()
    }
}

impl Shard {
    /// Builds the pool for `cfg`. No connection is made until one is needed.
    ///
    /// Connections use TLS and the process's login as [`crate::pgconn::settings`] makes them.
    ///
    /// # Errors
    /// [`Error::Config`] when the connection string does not parse, a TLS file cannot be
    /// used, or the pool cannot be built.
    pub fn new(index: usize, cfg: &ShardConfig, db: &DatabaseConfig) -> Result<Self> {
        let pool = build_pool(
            &cfg.url,
            &format!("shards[{index}].url"),
            db,
            db.pool_size,
            "vitalsink",
        )?;
        let direct = match db.direct_url(&cfg.name) {
            Some(url) => Some(build_pool(
                url,
                &format!("database.direct_urls.{}", cfg.name),
                db,
                DIRECT_POOL_SIZE,
                "vitalsink",
            )?),
            None => None,
        };
        Ok(Self {
            index,
            name: cfg.name.clone(),
            pool,
            direct,
        })
    }

    /// Whether `database.direct_urls` names this shard: [`Shard::session_client`] then
    /// bypasses the pooler.
    pub fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// A connection that is a PostgreSQL session of its own for as long as it is held: from
    /// `database.direct_urls.<name>` when configured (bypassing a transaction pooler), else
    /// from the pool. For session advisory locks held across transactions
    /// ([`BULK_LOCK_KEY`]); the commands that take one check at start-up that a transaction
    /// pool is bypassed ([`DatabaseConfig::require_sessions`]).
    ///
    /// # Errors
    /// As [`Shard::client`].
    pub async fn session_client(&self) -> Result<deadpool_postgres::Object> {
        self.get(self.direct.as_ref().unwrap_or(&self.pool)).await
    }

    /// Builds every shard of the ordered list.
    ///
    /// # Errors
    /// As [`Shard::new`].
    pub fn all(shards: &[ShardConfig], db: &DatabaseConfig) -> Result<Vec<Self>> {
        shards
            .iter()
            .enumerate()
            .map(|(i, s)| Self::new(i, s, db))
            .collect()
    }

    /// Takes a connection from the pool.
    ///
    /// # Errors
    /// [`Error::Postgres`] when connecting failed with the server's or driver's error (so a
    /// wrong password or a missing database keeps its SQLSTATE and is permanent,
    /// [`Error::class`]); [`Error::Pool`] when the pool itself timed out or is closed.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.get(&self.pool).await
    }

    async fn get(&self, pool: &Pool) -> Result<deadpool_postgres::Object> {
        pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => self.err(source),
            other => Error::Pool {
                shard: self.name.clone(),
                message: other.to_string(),
            },
        })
    }

    /// Wraps a driver error with this shard's name.
    pub fn err(&self, source: tokio_postgres::Error) -> Error {
        Error::Postgres {
            shard: self.name.clone(),
            source,
        }
    }
}
