//! Late resends: dropping from a chunk, before it is exported, the readings the archive already
//! holds.
//!
//! Why: vitalsink stores each reading once (schemas/README.md, "A reading's identity, time and
//! source"). The shard's unique index `measurements_reading` drops a resend while the reading
//! is still in the shard; once its day was archived and the chunk dropped, a resend lands in a
//! new chunk of the same range, the index has nothing to compare it with, and exporting that
//! late chunk as it is would put the reading in the archive twice. The spec: "a chunk archived
//! into a day that already has objects … is first compared with those objects, and the readings
//! already there are left out of the new object (`archiver run` reports them as
//! `duplicates`)".
//!
//! How, for each chunk `run` is about to export ([`drop_archived`]):
//! 1. which objects: the archive's live objects ([`Archived`], read from the manifest once per
//!    run) whose ts range overlaps the chunk's range, other than the chunk's own, of file format
//!    version 2 (a version 1 object's rows have no `occurrence`, and a NULL occurrence never
//!    matches, so nothing in it is a duplicate), and from the chunk's own shard unless a shard
//!    move was ever made (without one, a participant's readings never lived on another shard).
//!    None: nothing is done (the usual case). A chunk with an attempt the run adopts (written or
//!    verified before a crash) is left alone: its object holds the chunk as it is;
//! 2. the chunk's participants that have readings with an occurrence (`SELECT DISTINCT`);
//! 3. in one transaction on the job's connection: the identity columns of those objects' rows
//!    of these participants, within the chunk's range and with an occurrence, are streamed
//!    (only the six columns, row groups whose participant or ts statistics exclude them
//!    skipped, one batch at a time: memory is a batch, whatever the object's size), and each
//!    batch of at most `BATCH_ROWS` identities goes to `vitalsink_delete_archived(chunk,
//!    …arrays…)` (`schemas/sql/0013_delete_archived.sql`), which deletes the chunk's rows whose
//!    identity is equal (`participant_id`, `ts`, `metric`, `coalesce(device_id, '')`, `value`,
//!    `occurrence`; a NULL occurrence never matches, so rows from before schema version 12 are
//!    never dropped); COMMIT. This commits before the
//!    export's snapshot and before the chunk's SHARE lock is taken, so the export, the
//!    read-back and the drop's checks all see the chunk without the duplicates.
//!
//! The deleted rows are counted as `duplicates` in the run's report and in
//! `vitalsink_archiver_duplicates_total{shard}`. The function is SECURITY DEFINER and only
//! deletes from chunks of `measurements`, so the least-privilege `vitalsink_archiver` role
//! (schemas/ROLES.md), which has no `DELETE` on the table, may call it.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int16Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;
use tokio_postgres::Client;
use vitalsink_common::db::Shard;

use crate::error::{pg, Error, Result};
use crate::export::catalog::Chunk;
use crate::export::format::COLUMNS;
use crate::state::log::{self, Step};
use crate::state::manifest;
use crate::storage::objreader::ObjectReader;
use crate::storage::store::Archive;

/// Rows per batch read from an object.
const BATCH_ROWS: usize = 65_536;

/// The identity columns of a reading, as [`COLUMNS`] positions: participant_id, metric, ts,
/// value, device_id, occurrence.
const IDENTITY: [usize; 6] = [0, 1, 2, 3, 5, 8];

/// One live object of the archive.
#[derive(Debug, Clone)]
struct Object {
    shard: String,
    chunk_name: String,
    path: String,
    min_ts: i64,
    max_ts: i64,
    /// File format version 2 (has `occurrence`).
    provenance: bool,
}

/// The archive's live objects (from the manifest) and whether a shard move was ever made:
/// read once per run, when a shard has chunks to export.
#[derive(Debug, Default)]
pub struct Archived {
    objects: Vec<Object>,
    moved: bool,
}

impl Archived {
    /// Reads the manifest of `archive`, and on `map_shard` (the first configured) whether a
    /// shard move was ever made.
    ///
    /// # Errors
    /// As [`manifest::read_all`]; [`Error::Postgres`] or a connection error of the map shard.
    pub async fn load(archive: &Archive, map_shard: Option<&Shard>) -> Result<Self> {
        let moved = match map_shard {
            Some(s) => s
                .client()
                .await?
                .query_one("SELECT EXISTS (SELECT 1 FROM shard_moves)", &[])
                .await
                .map_err(pg(&s.name))?
                .get::<_, bool>(0),
            None => false,
        };
        let entries = manifest::read_all(archive).await?;
        let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        let objects = manifest::objects(&entries)
            .into_iter()
            .filter(|(_, st)| st.is_live())
            .filter_map(|((shard, path), st)| {
                let r = &st.last.row;
                Some(Object {
                    shard,
                    chunk_name: r.chunk_name.clone(),
                    path,
                    min_ts: micros(r.min_ts)?,
                    max_ts: micros(r.max_ts)?,
                    provenance: r.source_ranges.is_some(),
                })
            })
            .collect();
        Ok(Self { objects, moved })
    }

    /// The objects that may hold readings of `chunk` of `shard`.
    fn overlapping(&self, shard: &str, chunk: &Chunk) -> Vec<&Object> {
        let (lo, hi) = (
            chunk.range_start.timestamp_micros(),
            chunk.range_end.timestamp_micros(),
        );
        self.objects
            .iter()
            .filter(|o| o.provenance && o.min_ts < hi && o.max_ts >= lo)
            .filter(|o| !(o.shard == shard && o.chunk_name == chunk.name))
            .filter(|o| self.moved || o.shard == shard)
            .collect()
    }
}

/// Drops from `chunk` (on `c`, outside any transaction) the readings that `archived`'s objects
/// already hold; returns how many. See the module documentation.
///
/// # Errors
/// [`Error::Postgres`], [`Error::Store`], [`Error::Parquet`]; nothing is deleted then, and the
/// chunk should not be exported in this run.
pub async fn drop_archived(
    c: &Client,
    shard: &str,
    archive: &Archive,
    archived: &Archived,
    chunk: &Chunk,
) -> Result<u64> {
    let objects = archived.overlapping(shard, chunk);
    if objects.is_empty() || adopts_an_attempt(c, shard, chunk).await? {
        return Ok(0);
    }
    let ident = chunk.ident();
    let mut participants: Vec<String> = c
        .query(
            &format!("SELECT DISTINCT participant_id FROM {ident} WHERE occurrence IS NOT NULL"),
            &[],
        )
        .await
        .map_err(pg(shard))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if participants.is_empty() {
        return Ok(0);
    }
    participants.sort_unstable();
    c.batch_execute("BEGIN").await.map_err(pg(shard))?;
    let res = compare_and_delete(c, shard, archive, &objects, chunk, &participants).await;
    match res {
        Ok(n) => {
            c.batch_execute("COMMIT").await.map_err(pg(shard))?;
            if n > 0 {
                tracing::info!(shard, chunk = %chunk.name, duplicates = n, objects = objects.len(), "dropped readings already archived from the chunk before its export");
                crate::metrics::duplicates(shard, n);
            }
            Ok(n)
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Whether `run` adopts an earlier attempt of `chunk` (its newest `written` or `verified`).
async fn adopts_an_attempt(c: &Client, shard: &str, chunk: &Chunk) -> Result<bool> {
    let mut last = std::collections::BTreeMap::new();
    for r in log::of_chunk(c, shard, chunk).await? {
        if r.step != Step::Failed {
            last.insert(r.attempt.clone(), r.step);
        }
    }
    Ok(last
        .values()
        .any(|s| matches!(s, Step::Written | Step::Verified)))
}

/// Inside the open transaction: the objects' readings, a batch at a time, to
/// `vitalsink_delete_archived`. Returns the rows deleted.
async fn compare_and_delete(
    c: &Client,
    shard: &str,
    archive: &Archive,
    objects: &[&Object],
    chunk: &Chunk,
    participants: &[String],
) -> Result<u64> {
    let range = (
        chunk.range_start.timestamp_micros(),
        chunk.range_end.timestamp_micros(),
    );
    let delete = c
        .prepare("SELECT vitalsink_delete_archived($1::text::regclass, $2, $3, $4, $5, $6, $7)")
        .await
        .map_err(pg(shard))?;
    let ident = chunk.ident();
    let (mut compared, mut deleted) = (0u64, 0u64);
    for o in objects {
        let p = Path::from(o.path.as_str());
        let meta = archive.store.head(&p).await?;
        let reader = ObjectReader::new(archive.store.clone(), p, meta.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let names = builder.schema().fields();
        if names.len() != COLUMNS.len() || names.iter().zip(COLUMNS).any(|(f, n)| f.name() != n) {
            continue; // not of format version 2 after all: no occurrence
        }
        let groups: Vec<usize> = (0..builder.metadata().num_row_groups())
            .filter(|&i| may_hold(builder.metadata().row_group(i), participants, range))
            .collect();
        if groups.is_empty() {
            continue;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), IDENTITY);
        let mut stream = builder
            .with_projection(mask)
            .with_row_groups(groups)
            .with_batch_size(BATCH_ROWS)
            .build()?;
        while let Some(b) = stream.try_next().await? {
            let ids = identities(&b, participants, range, &o.path)?;
            if ids.pid.is_empty() {
                continue;
            }
            compared += ids.pid.len() as u64;
            let n: i64 = c
                .query_one(
                    &delete,
                    &[
                        &ident,
                        &ids.pid,
                        &ids.metric,
                        &ids.ts,
                        &ids.value,
                        &ids.device,
                        &ids.occurrence,
                    ],
                )
                .await
                .map_err(pg(shard))?
                .get(0);
            deleted += u64::try_from(n).unwrap_or(0);
        }
    }
    tracing::debug!(shard, chunk = %chunk.name, compared, deleted, "late chunk compared with the archive");
    Ok(deleted)
}

/// The identities of one batch of archived rows, as the arrays `vitalsink_delete_archived`
/// takes.
#[derive(Debug, Default)]
struct Identities<'a> {
    pid: Vec<&'a str>,
    metric: Vec<&'a str>,
    ts: Vec<DateTime<Utc>>,
    value: Vec<f64>,
    device: Vec<Option<&'a str>>,
    occurrence: Vec<i16>,
}

/// Whether row group `rg` may hold rows of `participants` (sorted) within `range` (µs, end
/// exclusive), by its statistics (no statistics: it may).
fn may_hold(rg: &RowGroupMetaData, participants: &[String], range: (i64, i64)) -> bool {
    let pid = rg.column(0).statistics();
    if let Some((lo, hi)) = pid.and_then(|s| Some((s.min_bytes_opt()?, s.max_bytes_opt()?))) {
        let first = participants.partition_point(|p| p.as_bytes() < lo);
        if participants.get(first).is_none_or(|p| p.as_bytes() > hi) {
            return false;
        }
    }
    if let Some(Statistics::Int64(s)) = rg.column(2).statistics() {
        if let (Some(&lo), Some(&hi)) = (s.min_opt(), s.max_opt()) {
            if hi < range.0 || lo >= range.1 {
                return false;
            }
        }
    }
    true
}

/// The identities of the rows of `b` (the [`IDENTITY`] columns) of `participants` within
/// `range` that have an occurrence.
fn identities<'a>(
    b: &'a RecordBatch,
    participants: &[String],
    range: (i64, i64),
    object: &str,
) -> Result<Identities<'a>> {
    let bad = || Error::Verify {
        object: object.to_string(),
        message: "columns do not have the archive schema's types".into(),
    };
    let col = |name: &str| b.column_by_name(name).ok_or_else(bad);
    let pid = col("participant_id")?
        .as_string_opt::<i32>()
        .ok_or_else(bad)?;
    let metric = col("metric")?.as_string_opt::<i32>().ok_or_else(bad)?;
    let ts = col("ts")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(bad)?;
    let value = col("value")?
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(bad)?;
    let device = col("device_id")?.as_string_opt::<i32>().ok_or_else(bad)?;
    let occ = col("occurrence")?
        .as_primitive_opt::<Int16Type>()
        .ok_or_else(bad)?;
    let mut out = Identities::default();
    for i in 0..b.num_rows() {
        let t = ts.value(i);
        if occ.is_null(i) || t < range.0 || t >= range.1 {
            continue;
        }
        let p = pid.value(i);
        if participants
            .binary_search_by(|x| x.as_str().cmp(p))
            .is_err()
        {
            continue;
        }
        out.pid.push(p);
        out.metric.push(metric.value(i));
        out.ts
            .push(DateTime::<Utc>::from_timestamp_micros(t).ok_or_else(bad)?);
        out.value.push(value.value(i));
        out.device
            .push((!device.is_null(i)).then(|| device.value(i)));
        out.occurrence.push(occ.value(i));
    }
    Ok(out)
}
