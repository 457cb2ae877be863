//! `trial lock create NAME --reason …`: freezes the dataset as it is now (ICH E6(R3)
//! 3.16.1(r), the database lock) as revision 1 of a lock (`vitalsink_common::datalock`).
//!
//! Per shard, in one REPEATABLE READ snapshot held by one session for the whole shard:
//! 1. the shard's archived objects that count, read from `archive_log` as `query` reads them
//!    (newest step `dropped`, under the newest name), with their rows, checksum and size;
//! 2. every chunk of `measurements` is locked `ACCESS SHARE` (so the archiver cannot drop it
//!    until the shard is done) and exported in that same snapshot
//!    (`vitalsink_archiver::export::export_in_snapshot`) to an object the lock owns,
//!    `locks/<name>/rev=1/shard=<shard>/part-<shard>-<chunk id>.parquet`, read back and
//!    verified (rows and content checksum) like any archived chunk.
//!
//! The manifest lists both kinds of object; it is stored in `dataset_locks` with its SHA-256
//! and written beside the objects as `locks/<name>/rev=1/manifest.json`. Then one audit entry.
//!
//! Refused: a name already used; a shard move in progress (rows would be on two shards); a
//! restored window (its rows are both hot and archived: archive them again first). Shards are
//! taken one after the other: rows ingested while the command runs are in the lock when their
//! shard's snapshot was taken after they committed. Lock with ingest stopped, or after the
//! data cut-off, for a lock that is exactly one instant on every shard.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::json;
use vitalsink_archiver::export::catalog::{quote, Chunk};
use vitalsink_archiver::export::checksum::Algorithm;
use vitalsink_archiver::export::ratelimit::RowLimiter;
use vitalsink_archiver::export::{export_in_snapshot, Target};
use vitalsink_archiver::progress::Progress;
use vitalsink_archiver::storage::layout::chunk_id;
use vitalsink_archiver::storage::readback;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::datalock::{Manifest, Object, Origin};
use vitalsink_common::db::Shard;
use vitalsink_common::Config;

use crate::commands::map_shard;
use crate::error::{Error, Result};

/// Top folder of the objects locks own.
pub const LOCKS_DIR: &str = "locks";

/// The folder of revision `rev` of lock `name`.
pub fn revision_dir(name: &str, rev: i32) -> String {
    format!("{LOCKS_DIR}/{name}/rev={rev}")
}

const CHUNKS_SQL: &str = "SELECT chunk_schema::text, chunk_name::text, range_start, range_end
       FROM timescaledb_information.chunks
      WHERE hypertable_schema = current_schema() AND hypertable_name = 'measurements'
      ORDER BY range_start";

/// Checks the lock name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, as the table's CHECK).
///
/// # Errors
/// [`Error::Arg`] (`name`).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Arg {
            arg: "name",
            message: format!(
                "{name:?}: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
            ),
        })
    }
}

/// Creates lock `name`; returns the report the command prints.
///
/// # Errors
/// [`Error::Refused`] (see the module documentation), [`Error::Archive`] when an export or its
/// verification fails (nothing is recorded; objects already written stay under the lock's
/// folder and are overwritten by the next try), [`Error::Common`] for the databases.
pub async fn run(
    cfg: &Config,
    shards: &[Shard],
    name: &str,
    reason: &str,
) -> Result<serde_json::Value> {
    check_name(name)?;
    let map = map_shard(shards)?;
    let refuse = |message: String| Error::Refused {
        action: format!("create lock {name}"),
        message,
    };
    {
        let c = map.client().await?;
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM dataset_locks WHERE name = $1)",
                &[&name],
            )
            .await
            .map_err(|e| Error::pg(map, e))?
            .get(0);
        if exists {
            return Err(refuse("a lock of that name exists".into()));
        }
        let moving: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM shard_moves WHERE phase <> 'done')",
                &[],
            )
            .await
            .map_err(|e| Error::pg(map, e))?
            .get(0);
        if moving {
            return Err(refuse(
                "a shard move is in progress; lock after it has finished".into(),
            ));
        }
    }
    let archive = vitalsink_archiver::storage::store::open(&cfg.archive)?;
    let locked_at = Utc::now();
    let dir = revision_dir(name, 1);
    let mut objects: Vec<Object> = Vec::new();
    for s in shards {
        objects.extend(capture_shard(cfg, &archive, s, &dir, &refuse).await?);
    }
    objects.sort_by(|a, b| a.path.cmp(&b.path));
    let rows: i64 = objects.iter().map(|o| o.rows).sum();
    let manifest = Manifest {
        name: name.to_string(),
        revision: 1,
        locked_at,
        rows,
        objects,
        erased: Vec::new(),
    };
    let entry = store_revision(
        &archive,
        map,
        &manifest,
        reason,
        action::LOCK_CREATE,
        json!({}),
    )
    .await?;
    let hot = manifest
        .objects
        .iter()
        .filter(|o| o.origin == Origin::Hot)
        .count();
    Ok(json!({
        "lock": name,
        "revision": 1,
        "locked_at": locked_at,
        "rows": rows,
        "objects": manifest.objects.len(),
        "hot_objects": hot,
        "archive_objects": manifest.objects.len() - hot,
        "audit_seq": entry,
    }))
}

/// Writes `m` beside its objects, records it in `dataset_locks` and appends its audit entry
/// (`act`, with `extra` merged into the details) in one transaction on the map shard; returns
/// the entry's seq.
///
/// # Errors
/// [`Error::Archive`] when the manifest object cannot be written, [`Error::Common`].
pub async fn store_revision(
    archive: &Archive,
    map: &Shard,
    m: &Manifest,
    reason: &str,
    act: &str,
    extra: serde_json::Value,
) -> Result<i64> {
    let text = serde_json::to_string(m).map_err(|e| Error::Output(e.to_string()))?;
    let checksum = Manifest::checksum_of(&text);
    let path = Path::from(format!(
        "{}/manifest.json",
        revision_dir(&m.name, m.revision)
    ));
    archive
        .store
        .put(&path, PutPayload::from(text.clone().into_bytes()))
        .await
        .map_err(vitalsink_archiver::Error::from)?;
    let mut details = json!({
        "lock": m.name,
        "revision": m.revision,
        "locked_at": m.locked_at,
        "rows": m.rows,
        "objects": m.objects.len(),
        "manifest": path.to_string(),
        "manifest_checksum": checksum,
    });
    if let (Some(d), Some(x)) = (details.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            d.insert(k.clone(), v.clone());
        }
    }
    let mut c = map.client().await?;
    let tx = c.transaction().await.map_err(|e| Error::pg(map, e))?;
    let entry = audit::append_in(&tx, map, &Record::new(act, details).reason(Some(reason))).await?;
    tx.execute(
        "INSERT INTO dataset_locks (name, revision, reason, rows, manifest, checksum, audit_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &m.name,
            &m.revision,
            &reason,
            &m.rows,
            &text,
            &checksum,
            &entry.seq,
        ],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    tx.commit().await.map_err(|e| Error::pg(map, e))?;
    Ok(entry.seq)
}

/// One shard's part of the lock (see the module documentation).
async fn capture_shard(
    cfg: &Config,
    archive: &Archive,
    s: &Shard,
    dir: &str,
    refuse: &dyn Fn(String) -> Error,
) -> Result<Vec<Object>> {
    let holder = s.client().await?;
    let e = |x| Error::pg(s, x);
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(e)?;
    let res = capture_in(cfg, archive, s, dir, refuse, &holder).await;
    let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = holder.batch_execute(end).await.map_err(e);
    let objects = res?;
    ended?;
    Ok(objects)
}

async fn capture_in(
    cfg: &Config,
    archive: &Archive,
    s: &Shard,
    dir: &str,
    refuse: &dyn Fn(String) -> Error,
    holder: &tokio_postgres::Client,
) -> Result<Vec<Object>> {
    let e = |x| Error::pg(s, x);
    let snapshot: String = holder
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(e)?
        .get(0);
    let restored: i64 = holder
        .query_one(
            "SELECT count(*) FROM archive_log WHERE step = 'restored' AND object_path IS NOT NULL",
            &[],
        )
        .await
        .map_err(e)?
        .get(0);
    if restored > 0 {
        return Err(refuse(format!(
            "shard {} has {restored} restored window(s): their rows are both in the database \
             and in the archive; archive them again (`archiver run`) first",
            s.name
        )));
    }
    let mut out = Vec::new();
    for r in holder
        .query(vitalsink_archiver::state::log::LIVE_OBJECTS_SQL, &[])
        .await
        .map_err(e)?
    {
        out.push(Object {
            path: r.get(0),
            origin: Origin::Archive,
            shard: s.name.clone(),
            range_start: r.get(1),
            range_end: r.get(2),
            rows: r.get(3),
            checksum: r.get(4),
            bytes: r.get(5),
        });
    }
    let chunks = holder.query(CHUNKS_SQL, &[]).await.map_err(e)?;
    let version: i32 = holder
        .query_one(
            "SELECT coalesce(max(version), 0) FROM vitalsink_schema_version",
            &[],
        )
        .await
        .map_err(e)?
        .get(0);
    for r in &chunks {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        holder
            .batch_execute(&format!(
                "LOCK TABLE {}.{} IN ACCESS SHARE MODE",
                quote(&schema),
                quote(&name)
            ))
            .await
            .map_err(e)?;
    }
    let limiter = RowLimiter::new(cfg.archive.rows_per_second, cfg.archive.batch_rows);
    for r in chunks {
        let (range_start, range_end): (DateTime<Utc>, DateTime<Utc>) = (r.get(2), r.get(3));
        let chunk = Chunk {
            schema: r.get(0),
            name: r.get(1),
            range_start,
            range_end,
            bytes: 0,
            est_rows: -1,
        };
        let path = Path::from(format!(
            "{dir}/shard={}/part-{}-{}.parquet",
            s.name,
            s.name,
            chunk_id(&chunk.name)
        ));
        let client = s.client().await?;
        let t = Target {
            shard: &s.name,
            chunk: &chunk,
            path: path.clone(),
            attempt: "lock",
            db_schema_version: version,
        };
        let x = export_in_snapshot(
            &client,
            archive,
            &cfg.archive,
            &t,
            &limiter,
            &Progress::none(),
            &snapshot,
        )
        .await?;
        if x.summary.rows == 0 {
            archive.delete(&path).await?;
            continue;
        }
        let rb = readback::read(archive, &path, Algorithm::of(Some(&x.summary.checksum))).await?;
        if rb.summary.rows != x.summary.rows || rb.summary.checksum != x.summary.checksum {
            return Err(Error::Failed(format!(
                "{path}: read back {} rows {} after writing {} rows {}",
                rb.summary.rows, rb.summary.checksum, x.summary.rows, x.summary.checksum
            )));
        }
        tracing::info!(shard = %s.name, chunk = %chunk.name, rows = x.summary.rows, object = %path, "hot chunk exported for the lock");
        out.push(Object {
            path: path.to_string(),
            origin: Origin::Hot,
            shard: s.name.clone(),
            range_start,
            range_end,
            rows: x.summary.rows as i64,
            checksum: x.summary.checksum,
            bytes: x.bytes as i64,
        });
    }
    Ok(out)
}
