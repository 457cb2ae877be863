//! [`Runner`], the archiver's working set every command uses (configuration, shards, archive,
//! rate limit; the shard-map check and migrations before any work), and the per-shard
//! advisory lock that keeps two archivers, or an archiver and a shard move, apart.

use std::sync::Arc;
use std::time::Duration;
use vitalsink_common::db::Shard;
use vitalsink_common::Config;

use crate::error::{pg, Result};
use crate::export::catalog::Chunk;
use crate::export::ratelimit::RowLimiter;
use crate::storage::store::{self, Archive};

/// Advisory-lock key held by the archiver on a shard while it works there (by `run` and by
/// `migrate-archive`), and by `reshard` for a whole move: the shared
/// [`vitalsink_common::db::BULK_LOCK_KEY`].
const SHARD_LOCK: i64 = vitalsink_common::db::BULK_LOCK_KEY;

/// Takes the archiver's session advisory lock on a shard; false when another archiver (an
/// overlapping cron start, a `migrate-archive`) or a shard move (`reshard`) holds it.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub(crate) async fn try_lock_shard(c: &tokio_postgres::Client, shard: &str) -> Result<bool> {
    Ok(
        c.query_one("SELECT pg_try_advisory_lock($1)", &[&SHARD_LOCK])
            .await
            .map_err(pg(shard))?
            .get(0),
    )
}

/// Releases [`try_lock_shard`]'s lock (a failure is only logged: the lock goes with the
/// session).
pub(crate) async fn unlock_shard(c: &tokio_postgres::Client, shard: &str) {
    if let Err(e) = c
        .execute("SELECT pg_advisory_unlock($1)", &[&SHARD_LOCK])
        .await
    {
        tracing::warn!(%shard, error = %e, "advisory unlock failed");
    }
}

/// The session a shard's lock ([`try_lock_shard`]) is held on. Behind a transaction pooler
/// it is a session of its own, on the shard's `database.direct_urls` entry
/// ([`Shard::session_client`]); otherwise the job's own pooled connection is a session and
/// holds the lock.
pub(crate) struct LockSession(Option<deadpool_postgres::Object>);

impl LockSession {
    /// Opens the direct session when the shard has one.
    ///
    /// # Errors
    /// As [`Shard::session_client`].
    pub(crate) async fn open(shard: &Shard) -> Result<Self> {
        Ok(Self(if shard.has_direct() {
            Some(shard.session_client().await?)
        } else {
            None
        }))
    }

    /// The connection that takes and releases the lock: the direct session, else `job`.
    pub(crate) fn client<'a>(
        &'a self,
        job: &'a tokio_postgres::Client,
    ) -> &'a tokio_postgres::Client {
        match &self.0 {
            Some(d) => d,
            None => job,
        }
    }
}

/// The archiver's working set: configuration, shards, archive, rate limit. A clone shares
/// the shards' pools, the archive and the rate limit (each shard's task of a run holds one).
#[derive(Debug, Clone)]
pub struct Runner {
    /// The configuration.
    pub(crate) cfg: Arc<Config>,
    /// The shards, in configuration order (the first is the map shard).
    pub(crate) shards: Vec<Shard>,
    /// The archive.
    pub(crate) archive: Archive,
    /// The process's export rate limit (`archive.rows_per_second`), shared by every shard.
    pub(crate) limiter: RowLimiter,
    /// Why (`--reason`), for the audit entries; `None`: each command's default.
    pub(crate) reason: Option<Arc<str>>,
}

/// Whether `chunk` overlaps one of the restored windows.
pub(crate) fn held(
    chunk: &Chunk,
    windows: &[(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)],
) -> bool {
    windows
        .iter()
        .any(|(s, e)| *s < chunk.range_end && chunk.range_start < *e)
}

impl Runner {
    /// Builds the shard pools, opens the archive and the rate limiter.
    ///
    /// # Errors
    /// Configuration errors naming the key, among them a shard name that cannot name archive
    /// objects ([`crate::storage::layout::check_shard_name`]).
    pub fn new(cfg: &Config) -> Result<Self> {
        for (i, s) in cfg.shards.iter().enumerate() {
            crate::storage::layout::check_shard_name(i, &s.name)?;
        }
        Ok(Self {
            shards: Shard::all(&cfg.shards, &cfg.database)?,
            archive: store::open(&cfg.archive)?,
            limiter: RowLimiter::new(cfg.archive.rows_per_second, cfg.archive.batch_rows),
            cfg: Arc::new(cfg.clone()),
            reason: None,
        })
    }

    /// With the operator's reason (`--reason`) for the audit entries of what it changes.
    #[must_use]
    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason.map(Into::into);
        self
    }

    /// The operator's reason (`--reason`), if given.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The reason `run`'s audit entries give: `--reason`, or "scheduled archiving: chunks
    /// older than <archive.older_than>".
    pub fn run_reason(&self) -> String {
        self.reason.as_deref().map_or_else(
            || {
                format!(
                    "scheduled archiving: chunks older than {}",
                    humantime::format_duration(self.cfg.archive.older_than)
                )
            },
            str::to_string,
        )
    }

    /// Copies the trail's new entries into the archive ([`crate::trail::copy_new`]); a
    /// failure is logged as a warning (the next copy takes them).
    pub async fn copy_trail(&self) {
        let Some(map_shard) = self.shards.first() else {
            return;
        };
        if let Err(e) = crate::trail::copy_new(&self.archive, map_shard).await {
            tracing::warn!(error = %e, "audit trail not copied to the archive; the next run copies it");
        }
    }

    /// The archive this runner writes to.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// The shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Refuses to work over a shard list other than the shard map's current epoch
    /// ([`vitalsink_common::shardmap`]): migrates the map shard (the first) and checks the
    /// configured names against the map when there is one. A deployment without a map yet is
    /// left for the first `ingest` to bootstrap. While a shard move (`reshard`) has not
    /// finished it waits (polling every second), then checks against the epoch the move
    /// ended in.
    ///
    /// # Errors
    /// [`vitalsink_common::Error::ShardMap`] naming both lists; the map shard's errors.
    pub async fn check_shard_map(&self) -> Result<()> {
        let Some(map_shard) = self.shards.first() else {
            return Ok(());
        };
        self.migrate(map_shard).await?;
        // A move copies and deletes participants' rows: archiving meanwhile could put rows in
        // the archive that the move also copies, or drop a chunk it copies from. The archiver
        // waits for it (a move also holds every shard's bulk lock while it runs).
        let mut logged: Option<std::time::Instant> = None;
        while let Some(mv) = vitalsink_common::shardmap::unfinished_move(map_shard).await? {
            if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::info!("{mv}; the archiver waits until it has finished");
                logged = Some(std::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some(map) = vitalsink_common::shardmap::current(map_shard).await? {
            let names: Vec<String> = self.shards.iter().map(|s| s.name.clone()).collect();
            vitalsink_common::shardmap::check(&map, &names)?;
        }
        Ok(())
    }

    /// Applies the pending schema migrations on `shard` (their audit entry goes to the map
    /// shard, [`vitalsink_common::migrate::migrate_recorded`]); returns its schema version.
    ///
    /// # Errors
    /// As [`vitalsink_common::migrate::migrate_recorded`].
    pub async fn migrate(&self, shard: &Shard) -> Result<i32> {
        let version = match self.shards.first() {
            Some(map_shard) => {
                vitalsink_common::migrate::migrate_recorded(shard, map_shard, &self.cfg.database)
                    .await?
            }
            None => vitalsink_common::migrate::migrate(shard, &self.cfg.database).await?,
        };
        Ok(version.max(vitalsink_common::migrate::latest_version()))
    }
}
