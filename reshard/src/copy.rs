//! Copying one participant's rows between shards, and the checksum that verifies it.
//!
//! The rows stream from `COPY (SELECT …) TO STDOUT (FORMAT binary)` on the old shard
//! straight into `COPY measurements FROM STDIN (FORMAT binary)` on the new one, chunk by
//! chunk: memory holds one chunk of the stream (tens of KiB), however many rows move. Rows go
//! in batches of participants (`reshard --batch-rows`), one COPY each way per batch. The
//! stream is throttled in bytes per second with `governor` (GCRA), so the shards keep serving
//! ingest and queries. The rows go through a staging table, which gives the checksum of
//! exactly the copied rows. The copy, and the `shard_move_rows` rows that record each participant
//! with its copied rows' count and checksum, commit in one transaction on the new shard: a
//! batch is there whole or not at all, and a re-run skips it.
//!
//! Every column moves ([`vitalsink_common::columns::COLUMNS`], provenance included). The new
//! shard's unique index `measurements_reading` (one row per reading, `schemas/README.md`, "A
//! reading's identity") can refuse a copied row in one case only: an online move, where a
//! resend of a reading the old shard holds was delivered after the cut-over and ingested on
//! the new shard before the history got there. The copied row is the first receipt, so it
//! takes that row's place: the batch first deletes the new shard's rows with a staged row's
//! identity, then inserts the staged rows, in one transaction (the mover role has `DELETE`
//! and `INSERT` on `measurements` but not `UPDATE`, which `ON CONFLICT … DO UPDATE` needs;
//! schemas/ROLES.md). The reading stays once, with the provenance of its first delivery, and
//! the copy never fails on it.

use futures::{SinkExt, TryStreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use vitalsink_common::columns::column_list;
use vitalsink_common::db::Shard;

use crate::error::Result;

/// Deletes the rows of `measurements` whose reading is staged (see the module docs): the
/// identity of the unique index `measurements_reading`; a NULL occurrence never matches.
const DELETE_STAGED_SQL: &str = "DELETE FROM measurements m USING reshard_staging s
     WHERE m.participant_id = s.participant_id AND m.ts = s.ts AND m.metric = s.metric
       AND coalesce(m.device_id, '') = coalesce(s.device_id, '') AND m.value = s.value
       AND m.occurrence = s.occurrence";

/// The `INSERT` of the staged rows into `measurements`, after [`DELETE_STAGED_SQL`].
fn insert_sql() -> String {
    let cols = column_list();
    format!("INSERT INTO measurements ({cols}) SELECT {cols} FROM reshard_staging")
}

/// [`CHECKSUM_SQL`] over `table` instead of `measurements`.
pub fn checksum_sql(table: &str) -> String {
    CHECKSUM_SQL.replace("FROM measurements WHERE", &format!("FROM {table} WHERE"))
}

/// Order-independent checksum per participant, the VDiff idea (Vitess, "VDiff"):
/// `count(*)` and the exact (numeric) sum of a 64-bit hash of every row's columns, with
/// timestamps as integer microseconds and values as PostgreSQL's shortest round-trip text,
/// so that it does not depend on a session's time zone. Two shards agree on a participant iff
/// they hold the same multiset of its rows (up to 64-bit hash collisions). `$1` is the
/// participants (`text[]`); a participant without rows is absent from the result.
///
/// Every column counts. The provenance columns of schema version 12 are one more field,
/// NULL (which `concat_ws` skips) when all seven are NULL: a row from before the upgrade
/// hashes as it did then, so a move started by an older `reshard` (its checksums recorded in
/// `shard_move_rows`) still verifies when a newer one resumes it.
pub const CHECKSUM_SQL: &str =
    "SELECT participant_id, count(*), coalesce(sum(hashtextextended(concat_ws('|',
        participant_id, metric, (extract(epoch FROM ts) * 1000000)::bigint, value::text,
        coalesce(unit, '\\N'), coalesce(device_id, '\\N'), coalesce(study_id, '\\N'),
        CASE WHEN num_nonnulls(utc_offset_min, occurrence, received_at, received_at_type,
                               src_topic, src_partition, src_offset) > 0
        THEN concat_ws('|',
            coalesce(utc_offset_min::text, '\\N'), coalesce(occurrence::text, '\\N'),
            coalesce(((extract(epoch FROM received_at) * 1000000)::bigint)::text, '\\N'),
            coalesce(received_at_type::text, '\\N'), coalesce(src_topic, '\\N'),
            coalesce(src_partition::text, '\\N'), coalesce(src_offset::text, '\\N')) END),
        0)::numeric), 0)::text
     FROM measurements WHERE participant_id = ANY($1) GROUP BY participant_id";

/// Per participant (rows, checksum).
pub type Sums = BTreeMap<String, (i64, String)>;

/// (rows, checksum) of each of `participants` on the connection `c`.
///
/// # Errors
/// The driver's error.
pub async fn checksums(
    c: &impl deadpool_postgres::GenericClient,
    participants: &[String],
) -> Result<Sums, tokio_postgres::Error> {
    let rows = c.query(CHECKSUM_SQL, &[&participants]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// A bytes-per-second throttle; `None` for no limit.
pub fn throttle(bytes_per_second: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(bytes_per_second).map(|n| RateLimiter::direct(Quota::per_second(n)))
}

/// Copies the rows of `participants` (one batch) from `from` to `to` in one transaction on
/// `to`, recording each participant as copied for move `move_id` with its rows and checksum
/// there; returns those.
///
/// # Errors
/// Database errors, with the shard named.
pub async fn copy_batch(
    from: &Shard,
    to: &Shard,
    move_id: i64,
    participants: &[String],
    limit: Option<&DefaultDirectRateLimiter>,
) -> Result<Sums> {
    let src = from.client().await?;
    let mut dst = to.client().await?;
    let tx = dst.transaction().await.map_err(|e| to.err(e))?;
    // COPY takes no parameters; participant ids are validated to [A-Za-z0-9._-], and quoted
    // regardless.
    let list = participants
        .iter()
        .map(|p| format!("'{}'", p.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let cols = column_list();
    let out = src
        .copy_out(&format!(
            "COPY (SELECT {cols} FROM measurements WHERE participant_id IN ({list})) TO STDOUT (FORMAT binary)"
        ))
        .await
        .map_err(|e| from.err(e))?;
    // Through a staging table dropped at commit: the checksum recorded is of exactly the rows
    // copied, while an online move's new rows of the same participants land beside them.
    tx.batch_execute("CREATE TEMP TABLE reshard_staging (LIKE measurements) ON COMMIT DROP")
        .await
        .map_err(|e| to.err(e))?;
    let sink = tx
        .copy_in(&format!(
            "COPY reshard_staging ({cols}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(|e| to.err(e))?;
    futures::pin_mut!(out);
    futures::pin_mut!(sink);
    while let Some(chunk) = out.try_next().await.map_err(|e| from.err(e))? {
        if let Some(l) = limit {
            wait_for(l, chunk.len()).await;
        }
        sink.send(chunk).await.map_err(|e| to.err(e))?;
    }
    sink.as_mut().finish().await.map_err(|e| to.err(e))?;
    let rows = tx
        .query(&checksum_sql("reshard_staging"), &[&participants])
        .await
        .map_err(|e| to.err(e))?;
    let sums: Sums = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let replaced = tx
        .execute(DELETE_STAGED_SQL, &[])
        .await
        .map_err(|e| to.err(e))?;
    if replaced > 0 {
        tracing::info!(shard = %to.name, replaced, "readings resent to the new shard during the move give way to their copied first receipt");
    }
    tx.execute(&insert_sql(), &[])
        .await
        .map_err(|e| to.err(e))?;
    let (ids, rows, sum): (Vec<&String>, Vec<i64>, Vec<&String>) = sums
        .iter()
        .map(|(p, (n, c))| (p, *n, c))
        .fold((vec![], vec![], vec![]), |mut acc, (p, n, c)| {
            acc.0.push(p);
            acc.1.push(n);
            acc.2.push(c);
            acc
        });
    tx.execute(
        "INSERT INTO shard_move_rows (move_id, participant_id, side, rows, checksum)
         SELECT $1, p, 'copied', n, c::numeric FROM unnest($2::text[], $3::int8[], $4::text[]) AS v(p, n, c)",
        &[&move_id, &ids, &rows, &sum],
    )
    .await
    .map_err(|e| to.err(e))?;
    tx.commit().await.map_err(|e| to.err(e))?;
    Ok(sums)
}

/// Waits until `limit` lets `bytes` through, in pieces no larger than one second's quota.
async fn wait_for(limit: &DefaultDirectRateLimiter, bytes: usize) {
    let mut left = bytes;
    while left > 0 {
        // The quota's burst is one second's worth; ask for at most that much at a time.
        let step = left.min(1 << 16);
        if let Some(n) = NonZeroU32::new(u32::try_from(step).unwrap_or(u32::MAX)) {
            if limit.until_n_ready(n).await.is_err() {
                // n exceeds the burst (a limit below 64 KiB/s): take it one KiB at a time.
                let mut k = step;
                while k > 0 {
                    let one = k.min(1024);
                    if let Some(n) = NonZeroU32::new(u32::try_from(one).unwrap_or(1)) {
                        let _ = limit.until_n_ready(n).await;
                    }
                    k -= one;
                }
            }
        }
        left -= step;
    }
}

/// Per participant, (rows, checksum) recorded on `shard` for move `id` as `side`.
pub(crate) async fn recorded(shard: &Shard, id: i64, side: &str) -> Result<Sums> {
    let c = shard.client().await?;
    let rows = c
        .query(
            "SELECT participant_id, rows, checksum::text FROM shard_move_rows
              WHERE move_id = $1 AND side = $2",
            &[&id, &side],
        )
        .await
        .map_err(|e| shard.err(e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitalsink_common::columns::COLUMNS;

    #[test]
    fn every_column_is_copied_and_checksummed() {
        for c in COLUMNS {
            assert!(CHECKSUM_SQL.contains(c), "{c} is not in the checksum");
            assert!(checksum_sql("reshard_staging").contains(c));
        }
        assert!(checksum_sql("reshard_staging").contains("FROM reshard_staging WHERE"));
        let insert = insert_sql();
        assert!(insert.starts_with(&format!("INSERT INTO measurements ({})", column_list())));
        for c in [
            "participant_id",
            "ts",
            "metric",
            "device_id",
            "value",
            "occurrence",
        ] {
            assert!(DELETE_STAGED_SQL.contains(&format!("m.{c}")), "{c}");
        }
    }
}
