//! Reading and writing `archive_log` rows on a shard, and how a row's source ranges are kept in
//! its `detail` column (see [`super`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::row::{LogRow, Step};
use crate::error::{pg, Result};
use crate::export::catalog::Chunk;

/// How [`LogRow::source_ranges`] is kept in the `detail` column.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredDetail {
    source_ranges: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The `detail` column of `row`: its detail, with its source ranges when it has them.
fn stored_detail(row: &LogRow) -> Option<String> {
    match &row.source_ranges {
        None => row.detail.clone(),
        Some(r) => serde_json::to_string(&StoredDetail {
            source_ranges: r.clone(),
            detail: row.detail.clone(),
        })
        .ok()
        .or_else(|| row.detail.clone()),
    }
}

/// The detail and source ranges kept in a `detail` column ([`stored_detail`]).
fn split_detail(stored: Option<String>) -> (Option<String>, Option<String>) {
    match stored {
        Some(s) if s.starts_with("{\"source_ranges\":") => {
            match serde_json::from_str::<StoredDetail>(&s) {
                Ok(d) => (d.detail, Some(d.source_ranges)),
                Err(_) => (Some(s), None),
            }
        }
        other => (other, None),
    }
}

/// The archive objects that count for a shard, as `query` and `trial lock create` read them in
/// one snapshot: per chunk, the object under its newest name (`dropped` or `renamed` row),
/// when the chunk's newest step (renames and restores left out) is `dropped`. Columns:
/// `object_path`, `range_start`, `range_end`, `rows`, `checksum` (`''` when unknown), `bytes`
/// (0 when unknown).
pub const LIVE_OBJECTS_SQL: &str = "WITH last AS (
        SELECT DISTINCT ON (chunk_schema, chunk_name) chunk_schema, chunk_name, step
          FROM archive_log WHERE step NOT IN ('restored', 'renamed')
         ORDER BY chunk_schema, chunk_name, id DESC),
     path AS (
        SELECT DISTINCT ON (chunk_schema, chunk_name) chunk_schema, chunk_name, object_path,
               range_start, range_end, rows, checksum, bytes
          FROM archive_log WHERE step IN ('dropped', 'renamed') AND object_path IS NOT NULL
         ORDER BY chunk_schema, chunk_name, id DESC)
     SELECT p.object_path, p.range_start, p.range_end, coalesce(p.rows, 0),
            coalesce(p.checksum, ''), coalesce(p.bytes, 0)
       FROM last l JOIN path p USING (chunk_schema, chunk_name) WHERE l.step = 'dropped'";

const COLUMNS: &str =
    "id, run_id, coalesce(attempt, run_id), hypertable, chunk_schema, chunk_name, \
     range_start, range_end, step, object_path, bytes, rows, checksum, min_ts, max_ts, detail, at, \
     renamed_from";

fn from_row(r: &tokio_postgres::Row) -> LogRow {
    let step: String = r.get(8);
    let (detail, source_ranges) = split_detail(r.get(15));
    LogRow {
        id: r.get(0),
        run_id: r.get(1),
        attempt: r.get(2),
        hypertable: r.get(3),
        chunk_schema: r.get(4),
        chunk_name: r.get(5),
        range_start: r.get(6),
        range_end: r.get(7),
        step: Step::parse(&step).unwrap_or(Step::Failed),
        object_path: r.get(9),
        bytes: r.get(10),
        rows: r.get(11),
        checksum: r.get(12),
        min_ts: r.get(13),
        max_ts: r.get(14),
        detail,
        at: r.get(16),
        renamed_from: r.get(17),
        source_ranges,
    }
}

/// Inserts `row`; returns it with its id and time.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn insert(c: &impl GenericClient, shard: &str, row: &LogRow) -> Result<LogRow> {
    let r = c
        .query_one(
            &format!(
                "INSERT INTO archive_log (run_id, attempt, hypertable, chunk_schema, chunk_name,
                     range_start, range_end, step, object_path, bytes, rows, checksum, min_ts,
                     max_ts, detail, renamed_from)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 RETURNING {COLUMNS}"
            ),
            &[
                &row.run_id,
                &row.attempt,
                &row.hypertable,
                &row.chunk_schema,
                &row.chunk_name,
                &row.range_start,
                &row.range_end,
                &row.step.as_str(),
                &row.object_path,
                &row.bytes,
                &row.rows,
                &row.checksum,
                &row.min_ts,
                &row.max_ts,
                &stored_detail(row),
                &row.renamed_from,
            ],
        )
        .await
        .map_err(pg(shard))?;
    Ok(from_row(&r))
}

/// Inserts `rows` in one transaction on `c` (which must have none open), in order: one
/// commit for all. Returns them with their ids and times.
///
/// # Errors
/// [`crate::Error::Postgres`]; nothing is inserted then.
pub async fn insert_all(
    c: &tokio_postgres::Client,
    shard: &str,
    rows: &[LogRow],
) -> Result<Vec<LogRow>> {
    c.batch_execute("BEGIN").await.map_err(pg(shard))?;
    let res = async {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(insert(c, shard, r).await?);
        }
        c.batch_execute("COMMIT").await.map_err(pg(shard))?;
        Ok(out)
    }
    .await;
    if res.is_err() {
        // After a failed COMMIT there is no transaction left; the server only warns.
        let _ = c.batch_execute("ROLLBACK").await;
    }
    res
}

/// Every row of one chunk, oldest first.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn of_chunk(c: &impl GenericClient, shard: &str, chunk: &Chunk) -> Result<Vec<LogRow>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_log
                  WHERE chunk_schema = $1 AND chunk_name = $2 AND step <> 'restored'
                  ORDER BY id"
            ),
            &[&chunk.schema, &chunk.name],
        )
        .await
        .map_err(pg(shard))?;
    Ok(rows.iter().map(from_row).collect())
}

/// The newest row (failures and restores left out) of every attempt that has an object
/// path, in id order: where each attempt's object stands. For `migrate-archive`.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn attempts(c: &impl GenericClient, shard: &str) -> Result<Vec<LogRow>> {
    let rows = c
        .query(
            &format!(
                "SELECT * FROM (
                     SELECT DISTINCT ON (chunk_schema, chunk_name, coalesce(attempt, run_id))
                            {COLUMNS} FROM archive_log
                      WHERE step NOT IN ('failed', 'restored') AND object_path IS NOT NULL
                      ORDER BY chunk_schema, chunk_name, coalesce(attempt, run_id), id DESC) a
                  ORDER BY id"
            ),
            &[],
        )
        .await
        .map_err(pg(shard))?;
    Ok(rows.iter().map(from_row).collect())
}

/// The `dropped` rows logged since the shard has the audit trail (its schema version 14
/// applied, `vitalsink_schema_version.applied_at`, by the shard's own clock like `at`),
/// oldest first: the drops that must each have an audit entry
/// ([`crate::state::audit::DropTrail::sweep`]). None before that version.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn dropped_since_trail(c: &impl GenericClient, shard: &str) -> Result<Vec<LogRow>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_log
                  WHERE step = 'dropped'
                    AND at >= (SELECT applied_at FROM vitalsink_schema_version WHERE version = 14)
                  ORDER BY id"
            ),
            &[],
        )
        .await
        .map_err(pg(shard))?;
    Ok(rows.iter().map(from_row).collect())
}

/// Rows not yet mirrored to the manifest, oldest first (at most `limit`).
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn not_in_manifest(
    c: &impl GenericClient,
    shard: &str,
    limit: i64,
) -> Result<Vec<LogRow>> {
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM archive_log WHERE NOT in_manifest ORDER BY id LIMIT $1"
            ),
            &[&limit],
        )
        .await
        .map_err(pg(shard))?;
    Ok(rows.iter().map(from_row).collect())
}

/// Marks rows `ids` as mirrored to the manifest (one statement).
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn mark_in_manifest(c: &impl GenericClient, shard: &str, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    c.execute(
        "UPDATE archive_log SET in_manifest = true WHERE id = ANY($1)",
        &[&ids],
    )
    .await
    .map_err(pg(shard))?;
    Ok(())
}

/// Time windows brought back by `restore` (`[start, end)`). Chunks overlapping one are held:
/// archiving them again would store the restored rows a second time.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn restored_windows(
    c: &impl GenericClient,
    shard: &str,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let rows = c
        .query(
            "SELECT DISTINCT range_start, range_end FROM archive_log WHERE step = 'restored'",
            &[],
        )
        .await
        .map_err(pg(shard))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Per step of each chunk's newest row (`renamed` rows left out: they move an object, the
/// chunk stays dropped): number of chunks, plus rows and bytes dropped in all, objects
/// renamed and the time of the newest row. For `status`.
///
/// # Errors
/// [`crate::Error::Postgres`].
pub async fn summary(c: &impl GenericClient, shard: &str) -> Result<serde_json::Value> {
    let by_step = c
        .query(
            "SELECT step, count(*) FROM (
                 SELECT DISTINCT ON (chunk_schema, chunk_name) step FROM archive_log
                  WHERE step NOT IN ('restored', 'renamed')
                  ORDER BY chunk_schema, chunk_name, id DESC) s
              GROUP BY step ORDER BY step",
            &[],
        )
        .await
        .map_err(pg(shard))?;
    let totals = c
        .query_one(
            "SELECT coalesce(sum(rows) FILTER (WHERE step = 'dropped'), 0)::bigint,
                    coalesce(sum(bytes) FILTER (WHERE step = 'dropped'), 0)::bigint,
                    count(*) FILTER (WHERE step = 'restored'),
                    max(at), count(*) FILTER (WHERE NOT in_manifest),
                    count(*) FILTER (WHERE step = 'renamed')
               FROM archive_log",
            &[],
        )
        .await
        .map_err(pg(shard))?;
    let steps: serde_json::Map<String, serde_json::Value> = by_step
        .iter()
        .map(|r| (r.get::<_, String>(0), serde_json::json!(r.get::<_, i64>(1))))
        .collect();
    Ok(serde_json::json!({
        "chunks_by_last_step": steps,
        "rows_archived_and_dropped": totals.get::<_, i64>(0),
        "bytes_archived": totals.get::<_, i64>(1),
        "restores": totals.get::<_, i64>(2),
        "last_step_at": totals.get::<_, Option<DateTime<Utc>>>(3),
        "log_rows_not_in_manifest": totals.get::<_, i64>(4),
        "objects_renamed": totals.get::<_, i64>(5),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_travel_in_the_detail_column() {
        let t = DateTime::from_timestamp(0, 0).unwrap();
        let chunk = Chunk {
            schema: "s".into(),
            name: "c".into(),
            range_start: t,
            range_end: t,
            bytes: 0,
            est_rows: 0,
        };
        let mut w = LogRow::new("r", "a", &chunk, Step::Written);
        assert_eq!(stored_detail(&w), None);
        w.source_ranges = Some("vitals/0:1-9".into());
        let stored = stored_detail(&w);
        assert_eq!(
            stored.as_deref(),
            Some(r#"{"source_ranges":"vitals/0:1-9"}"#)
        );
        assert_eq!(split_detail(stored), (None, Some("vitals/0:1-9".into())));
        let mut f = w.next(Step::Renamed);
        f.detail = Some("renamed from a to b".into());
        let both = split_detail(stored_detail(&f));
        assert_eq!(
            both,
            (
                Some("renamed from a to b".into()),
                Some("vitals/0:1-9".into())
            )
        );
        // Kept for the object's steps, not for the others; other details stay as they are.
        assert_eq!(
            w.next(Step::Dropped).source_ranges.as_deref(),
            Some("vitals/0:1-9")
        );
        assert_eq!(w.next(Step::Failed).source_ranges, None);
        let restore = r#"{"matched":1,"participants":[],"skipped":0}"#.to_string();
        assert_eq!(split_detail(Some(restore.clone())), (Some(restore), None));
    }
}
