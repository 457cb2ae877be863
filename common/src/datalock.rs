//! Dataset locks: a named, immutable list of archive objects that together hold exactly the
//! data as of the lock (ICH E6(R3) 3.16.1(r), the database lock before unblinding).
//!
//! `trial lock create NAME` exports every shard's hot rows to objects the lock owns
//! (`locks/<name>/rev=<n>/…`) and lists them with the archive's live objects at that moment;
//! the list is a [`Manifest`], stored as revision 1 in `dataset_locks` on the map shard
//! (`schemas/sql/0014_trial.sql`) and beside the objects in the archive. An erasure after the
//! lock writes revision `n + 1` with the participant's rows removed (recorded in the audit
//! trail). `query --lock NAME` reads the newest revision's objects and nothing else, so later
//! late data, restores, shard moves and new readings do not change what it returns; the
//! archive keeps every object some revision of a lock names ([`referenced`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::Shard;
use crate::error::{Error, Result};

/// Where an object of a lock came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An object of the live archive (written by `archiver run`).
    Archive,
    /// Hot rows of a chunk exported for the lock; the lock owns the object.
    Hot,
}

/// One object of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Path relative to the archive root.
    pub path: String,
    /// Where it came from.
    pub origin: Origin,
    /// Shard whose chunk it holds.
    pub shard: String,
    /// The chunk's time range `[start, end)`, UTC.
    pub range_start: DateTime<Utc>,
    /// End of the range, exclusive.
    pub range_end: DateTime<Utc>,
    /// Rows the object holds.
    pub rows: i64,
    /// Content checksum of its rows (`vitalsink_archiver::export::checksum`).
    pub checksum: String,
    /// Size, bytes.
    pub bytes: i64,
}

/// One revision of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The lock's name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
    pub name: String,
    /// From 1; an erasure after the lock adds one.
    pub revision: i32,
    /// When revision 1 was taken, UTC.
    pub locked_at: DateTime<Utc>,
    /// Rows over every object.
    pub rows: i64,
    /// Every object, in path order.
    pub objects: Vec<Object>,
    /// Participants removed by erasures since revision 1, sorted.
    #[serde(default)]
    pub erased: Vec<String>,
}

impl Manifest {
    /// The manifest's own checksum: SHA-256 of its JSON text as stored.
    pub fn checksum_of(text: &str) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(text.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// The newest revision of lock `name` (or `revision` when given), with its stored checksum;
/// `None` when there is none.
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`]; [`Error::Audit`] when the stored manifest does not
/// parse or its checksum does not match.
pub async fn load(
    map_shard: &Shard,
    name: &str,
    revision: Option<i32>,
) -> Result<Option<Manifest>> {
    let c = map_shard.client().await?;
    let row = c
        .query_opt(
            "SELECT manifest, checksum FROM dataset_locks
              WHERE name = $1 AND ($2::int IS NULL OR revision = $2)
              ORDER BY revision DESC LIMIT 1",
            &[&name, &revision],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.get(0);
    let checksum: String = row.get(1);
    if Manifest::checksum_of(&text) != checksum {
        return Err(Error::Audit(format!(
            "lock {name}: the stored manifest does not match its checksum"
        )));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Audit(format!("lock {name}: manifest unreadable: {e}")))
}

/// Every lock's name, sorted.
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`].
pub async fn names(map_shard: &Shard) -> Result<Vec<String>> {
    let c = map_shard.client().await?;
    Ok(
        c.query("SELECT DISTINCT name FROM dataset_locks ORDER BY name", &[])
            .await
            .map_err(|e| map_shard.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    )
}

/// Every object path named by the newest revision of any lock: what the archive must keep.
/// (An earlier revision's objects are what an erasure removed; they go.)
///
/// # Errors
/// [`Error::Postgres`]/[`Error::Pool`]; [`Error::Audit`] for an unreadable manifest.
pub async fn referenced(map_shard: &Shard) -> Result<std::collections::BTreeSet<String>> {
    let c = map_shard.client().await?;
    let rows = c
        .query(
            "SELECT DISTINCT ON (name) name, manifest FROM dataset_locks
              ORDER BY name, revision DESC",
            &[],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    let mut out = std::collections::BTreeSet::new();
    for r in rows {
        let name: String = r.get(0);
        let m: Manifest = serde_json::from_str(r.get(1))
            .map_err(|e| Error::Audit(format!("lock {name}: manifest unreadable: {e}")))?;
        out.extend(m.objects.into_iter().map(|o| o.path));
    }
    Ok(out)
}
