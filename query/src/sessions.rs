//! Sessions on the shards: the engine's connection pools, one per shard URL, and the
//! connection that holds one query's snapshot of a shard ([`Conn`]), on a replica when one
//! answers (`session`). What is read in that snapshot is [`crate::snapshot`]'s.

use std::sync::{Arc, Mutex};
use vitalsink_common::config::ShardConfig;

use crate::error::{Error, Result};

/// Connections kept per shard (primary or replica URL) for the snapshots of the engine's
/// queries: a query opens its snapshots on them instead of connecting anew (a new
/// PostgreSQL backend, with TimescaleDB loaded, took milliseconds of a one-participant query).
/// More at once than this connect on their own, as before.
pub const POOL_SIZE: usize = 8;

/// The engine's connection pools, one per shard URL, made on first use (deadpool). A
/// connection comes back only after its statement read to the end, its transaction rolled
/// back ([`Conn::release`]), or, holding no transaction, as it is ([`Conn::put_back`]); any
/// other is closed when dropped, so no snapshot outlives its query and the pool runs no
/// statement when it hands one out (deadpool's `Fast` recycling).
#[derive(Debug, Default)]
pub struct Pools {
    by_url: std::sync::Mutex<std::collections::HashMap<String, deadpool_postgres::Pool>>,
}

impl Pools {
    fn pool(
        &self,
        name: &str,
        url: &str,
        db: &vitalsink_common::config::DatabaseConfig,
    ) -> Result<deadpool_postgres::Pool> {
        let mut by_url = self.by_url.lock().map_err(|_| Error::Shard {
            shard: name.to_string(),
            message: "the engine's connection pools are poisoned (a thread panicked)".into(),
        })?;
        if let Some(p) = by_url.get(url) {
            return Ok(p.clone());
        }
        // Deadpool's `Fast` recycling: nothing runs on hand-out ([`Conn`] gives a connection
        // back only with its transaction ended).
        let pool = vitalsink_common::db::build_pool(
            url,
            &format!("shard {name} connection string"),
            db,
            POOL_SIZE,
            "vitalsink-query",
        )?;
        by_url.insert(url.to_string(), pool.clone());
        Ok(pool)
    }

    /// A session on shard `name` at `url`: pooled when the pool has one to give now, else a
    /// connection of its own.
    ///
    /// # Errors
    /// [`Error::Shard`] naming the shard when it does not answer.
    pub async fn session(
        &self,
        name: &str,
        url: &str,
        db: &vitalsink_common::config::DatabaseConfig,
    ) -> Result<Conn> {
        let pool = self.pool(name, url, db)?;
        let now = deadpool_postgres::Timeouts {
            wait: Some(std::time::Duration::ZERO),
            ..Default::default()
        };
        match pool.timeout_get(&now).await {
            Ok(o) => Ok(Conn::Pooled(Some(o))),
            Err(deadpool_postgres::PoolError::Backend(e)) => Err(Error::Shard {
                shard: name.to_string(),
                message: vitalsink_common::error::describe_postgres(&e),
            }),
            Err(_) => Ok(Conn::Plain(connect(name, url, db).await?)),
        }
    }
}

/// A connection holding a shard's snapshot: one of its own, or one from the engine's pool
/// ([`Pools`]).
pub enum Conn {
    /// A connection of its own, closed when dropped.
    Plain(tokio_postgres::Client),
    /// A pooled connection: back to the pool only through [`Conn::release`] (its statement
    /// read to the end, its transaction rolled back) or [`Conn::put_back`]; dropped any other
    /// way (a snapshot never read, a statement stopped early, a query dropped mid-read) it is
    /// closed, so no snapshot or statement of it outlives its query and the shard stops
    /// working on it. `None` only once it has been given back.
    Pooled(Option<deadpool_postgres::Object>),
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Self::Pooled(o) = self {
            if let Some(o) = o.take() {
                drop(deadpool_postgres::Object::take(o));
            }
        }
    }
}

impl Conn {
    /// The client.
    ///
    /// # Errors
    /// [`Error::Shard`] naming `shard` for a pooled connection already given back (a bug: the
    /// methods that give it back consume the `Conn`).
    pub fn client(&self, shard: &str) -> Result<&tokio_postgres::Client> {
        match self {
            Self::Plain(c) => Ok(c),
            Self::Pooled(Some(o)) => Ok(o),
            Self::Pooled(None) => Err(Error::Shard {
                shard: shard.to_string(),
                message: "the session was already given back to its pool".into(),
            }),
        }
    }

    /// Ends the snapshot: a pooled connection whose statement `completed` goes back to the
    /// pool with its transaction rolled back (read-only: nothing to keep); any other is closed.
    pub async fn release(mut self, completed: bool) {
        if let Self::Pooled(slot) = &mut self {
            if let Some(o) = slot.take() {
                if !(completed && o.batch_execute("ROLLBACK").await.is_ok()) {
                    drop(deadpool_postgres::Object::take(o));
                }
            }
        }
    }

    /// Gives a pooled connection that holds no transaction back to the pool as it is (the
    /// pool runs no statement on it: `ROLLBACK` there would only draw PostgreSQL's "there is
    /// no transaction in progress" warning).
    pub fn put_back(mut self) {
        if let Self::Pooled(slot) = &mut self {
            drop(slot.take());
        }
    }
}

/// A shard's snapshot session, taken by the first plan node that runs on it.
pub type Session = Arc<Mutex<Option<Conn>>>;

/// The session that will hold one query's snapshot of shard `sc` (its transaction lasts as
/// long as the query reads; from the pool when it has one free, [`Pools::session`]): on the
/// first of its replicas that answers, unless `primary_only`, else on the primary. Returns
/// the session and where it is (`primary`, `replica N`).
///
/// # Errors
/// [`Error::Shard`] naming the shard when its primary does not answer.
pub(crate) async fn session(
    pools: &Pools,
    sc: &ShardConfig,
    db: &vitalsink_common::config::DatabaseConfig,
    primary_only: bool,
) -> Result<(Conn, String)> {
    if !primary_only {
        for (i, url) in sc.replicas.iter().enumerate() {
            match pools.session(&sc.name, url, db).await {
                Ok(c) => return Ok((c, format!("replica {i}"))),
                Err(e) => {
                    tracing::warn!(shard = %sc.name, replica = i, error = %e, "replica does not answer; trying the next, then the primary");
                }
            }
        }
    }
    Ok((
        pools.session(&sc.name, &sc.url, db).await?,
        "primary".into(),
    ))
}

/// A plain session on shard `name` at `url`, with TLS and login as every binary's (also the
/// session of [`crate::trial_tables`]' reads of the map shard).
///
/// # Errors
/// [`Error::Shard`] naming the shard when it does not answer; configuration errors of the
/// connection string.
pub(crate) async fn connect(
    name: &str,
    url: &str,
    db: &vitalsink_common::config::DatabaseConfig,
) -> Result<tokio_postgres::Client> {
    let fail = |message: String| Error::Shard {
        shard: name.to_string(),
        message,
    };
    // TLS and login as every binary's ([`vitalsink_common::pgconn`]).
    let (pg, tls) = vitalsink_common::pgconn::settings(
        url,
        &format!("shard {name} connection string"),
        db,
        "vitalsink-query",
    )?;
    let (c, conn) = pg
        .connect(tls)
        .await
        .map_err(|e| fail(vitalsink_common::error::describe_postgres(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}
