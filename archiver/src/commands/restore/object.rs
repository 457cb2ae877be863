//! One object's restore ([`super`]): its rows in the window that route to the shard are
//! copied (binary COPY) into a temporary table, and the readings the hypertable does not hold
//! yet are inserted from it, in one transaction under the shard's restore lock.

use arrow::array::{Array, RecordBatch};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use postgres_types::{ToSql, Type};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

use super::{Request, RESTORE_LOCK};
use crate::error::{pg, Error, Result};
use crate::export::catalog::HYPERTABLE;
use crate::export::format::{Columns, COLUMNS};
use crate::runner::Runner;
use crate::state::log::Step;
use crate::state::manifest::{self, Entry};

/// Inserts the temporary table's readings that the hypertable does not hold yet (`$1`, `$2`:
/// the window). `ON CONFLICT DO NOTHING` covers a reading that ingest writes meanwhile.
fn insert_new_sql() -> String {
    let cols = COLUMNS.join(", ");
    let from_s = COLUMNS.map(|c| format!("s.{c}")).join(", ");
    format!(
        "INSERT INTO measurements ({cols})
         SELECT {from_s}
           FROM vitalsink_restore s
          WHERE NOT EXISTS (
                SELECT 1 FROM measurements m
                 WHERE m.participant_id = s.participant_id AND m.ts = s.ts
                   AND m.metric = s.metric
                   AND coalesce(m.device_id, '') = coalesce(s.device_id, '')
                   AND m.value = s.value
                   AND m.occurrence IS NOT DISTINCT FROM s.occurrence
                   AND m.ts >= $1 AND m.ts < $2)
         ON CONFLICT DO NOTHING"
    )
}

/// Types of [`COLUMNS`] in the binary COPY into the temporary table.
const TYPES: [Type; 14] = [
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::INT2,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
];

/// Restores the rows of one object that `routes_here` accepts, in one transaction on `shard`;
/// returns (rows in the window, rows inserted). With no row for it and `logged_anyway` false
/// (a shard other than the object's own), nothing is written.
pub(super) async fn restore_object(
    runner: &Runner,
    shard: &vitalsink_common::db::Shard,
    entry: &Entry,
    req: &Request,
    restore_id: &str,
    routes_here: &dyn Fn(&str) -> bool,
    logged_anyway: bool,
) -> Result<(u64, u64)> {
    let name = shard.name.as_str();
    let path = entry.row.object_path.clone().unwrap_or_default();
    let mut obj = shard.client().await?;
    let client: &mut tokio_postgres::Client = &mut obj;
    let tx = client.transaction().await.map_err(pg(name))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RESTORE_LOCK])
        .await
        .map_err(pg(name))?;
    tx.batch_execute(
        "CREATE TEMP TABLE vitalsink_restore (LIKE measurements INCLUDING DEFAULTS) ON COMMIT DROP",
    )
    .await
    .map_err(pg(name))?;
    let sink = tx
        .copy_in(&format!(
            "COPY vitalsink_restore ({}) FROM STDIN (FORMAT binary)",
            COLUMNS.join(", ")
        ))
        .await
        .map_err(pg(name))?;
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    let mut writer = std::pin::pin!(writer);
    let archive = runner.archive();
    let p = Path::from(path.as_str());
    let meta = archive.store.head(&p).await?;
    let reader = crate::storage::objreader::ObjectReader::new(archive.store.clone(), p, meta.size);
    let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await?
        .build()?;
    while let Some(b) = stream.try_next().await? {
        copy_matching(&b, req, routes_here, writer.as_mut(), name).await?;
    }
    let matched = writer.as_mut().finish().await.map_err(pg(name))?;
    if matched == 0 && !logged_anyway {
        return Ok((0, 0)); // rolled back: nothing of this object routes here
    }
    let inserted = tx
        .execute(&insert_new_sql(), &[&req.from, &req.to])
        .await
        .map_err(pg(name))?;
    let mut row = entry.row.next(Step::Restored);
    row.run_id = restore_id.to_string();
    row.hypertable = HYPERTABLE.to_string();
    row.range_start = req.from;
    row.range_end = req.to;
    row.rows = Some(inserted as i64);
    row.detail = Some(
        serde_json::json!({
            "matched": matched,
            "skipped": matched - inserted,
            "participants": req.participants,
        })
        .to_string(),
    );
    let logged = crate::state::log::insert(&tx, name, &row).await?;
    tx.commit().await.map_err(pg(name))?;
    let c: &tokio_postgres::Client = client;
    if let Err(e) = manifest::mirror(archive, c, name, &logged).await {
        tracing::warn!(shard = name, error = %e, "manifest mirror failed; retried next run");
    }
    Ok((matched, inserted))
}

/// COPYs the rows of `b` inside the window (and participant filter) that `routes_here`
/// accepts into `w`.
async fn copy_matching(
    b: &RecordBatch,
    req: &Request,
    routes_here: &dyn Fn(&str) -> bool,
    mut w: std::pin::Pin<&mut BinaryCopyInWriter>,
    shard: &str,
) -> Result<()> {
    let bad = || Error::Verify {
        object: "restore".into(),
        message: "a timestamp out of range".into(),
    };
    let c = Columns::of(b, "restore")?;
    let (from, to) = (req.from.timestamp_micros(), req.to.timestamp_micros());
    let micros = |t: i64| DateTime::<Utc>::from_timestamp_micros(t).ok_or_else(bad);
    for i in 0..b.num_rows() {
        let t = c.ts.value(i);
        if t < from || t >= to {
            continue;
        }
        let p = c.pid.value(i);
        if !req.participants.is_empty() && !req.participants.contains(p) {
            continue;
        }
        if !routes_here(p) {
            continue;
        }
        let t = micros(t)?;
        let v = c.value.value(i);
        let o: Vec<Option<&str>> = c
            .opt
            .iter()
            .map(|col| (!col.is_null(i)).then(|| col.value(i)))
            .collect();
        let m = c.metric.value(i);
        // An object of format version 1 has no provenance: NULL in all seven.
        let at = |a: &dyn Array| !a.is_null(i);
        let pv = c.prov.as_ref();
        let utc_offset_min =
            pv.and_then(|p| at(p.utc_offset_min).then(|| p.utc_offset_min.value(i)));
        let occurrence = pv.and_then(|p| at(p.occurrence).then(|| p.occurrence.value(i)));
        let received_at = pv
            .and_then(|p| at(p.received_at).then(|| p.received_at.value(i)))
            .map(micros)
            .transpose()?;
        let received_at_type =
            pv.and_then(|p| at(p.received_at_type).then(|| p.received_at_type.value(i)));
        let src_topic = pv.and_then(|p| at(p.src_topic).then(|| p.src_topic.value(i)));
        let src_partition = pv.and_then(|p| at(p.src_partition).then(|| p.src_partition.value(i)));
        let src_offset = pv.and_then(|p| at(p.src_offset).then(|| p.src_offset.value(i)));
        let row: [&(dyn ToSql + Sync); 14] = [
            &p,
            &m,
            &t,
            &v,
            &o[0],
            &o[1],
            &o[2],
            &utc_offset_min,
            &occurrence,
            &received_at,
            &received_at_type,
            &src_topic,
            &src_partition,
            &src_offset,
        ];
        w.as_mut().write(&row).await.map_err(pg(shard))?;
    }
    Ok(())
}
