//! The archive's part of a scan: the Parquet objects of chunks their shards have dropped
//! ([`crate::snapshot`]), read with DataFusion's Parquet reader from the archive's object
//! store.
//!
//! - Objects whose chunk's time range lies outside the query's `ts` bounds are not opened
//!   (the range is the chunk's, which also names the object's Hive `date=` folder).
//! - The query's filters go to the reader as its pruning predicate: row groups whose
//!   statistics (the archiver writes them sorted by participant and time) cannot match are
//!   skipped.
//! - Rows of an object inside a window a restore brought back into a database are left out
//!   (a filter on that object's scan only), since the database rows count.
//! - Objects of every format version are read into the current table schema: an object
//!   written before schema version 12 lacks the seven provenance columns, and the reader
//!   fills them with NULL (DataFusion's default physical expression adapter matches the
//!   object's columns to the table's by name; a filter on a missing column sees NULL, so
//!   `src_partition = 3` matches none of such an object's rows and prunes nothing wrongly).

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{col, lit, Expr};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::snapshot::{Archived, Restored};

/// The URL the archive's store is registered under in the engine.
pub const STORE_URL: &str = "vitalsink-archive://root";

fn ts_lit(t: chrono::DateTime<chrono::Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some("UTC".into()),
    ))
}

/// Whether an object of the chunk range `[start, end)` may hold rows with `lo <= ts <= hi`.
fn overlaps(
    range: &(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    lo: Option<i64>,
    hi: Option<i64>,
) -> bool {
    let (s, e) = (range.0.timestamp_micros(), range.1.timestamp_micros());
    lo.is_none_or(|lo| e > lo) && hi.is_none_or(|hi| s <= hi)
}

/// The rows of restored windows of one object: `NOT (w1 OR w2 …)`.
fn not_restored(windows: &[&Restored]) -> Option<Expr> {
    let any = windows
        .iter()
        .map(|w| {
            let mut e = col("ts")
                .gt_eq(ts_lit(w.window.0))
                .and(col("ts").lt(ts_lit(w.window.1)));
            if !w.participants.is_empty() {
                e = e.and(col("participant_id").in_list(
                    w.participants.iter().map(|p| lit(p.as_str())).collect(),
                    false,
                ));
            }
            e
        })
        .reduce(Expr::or)?;
    Some(datafusion::logical_expr::not(any))
}

/// Archive objects whose size is asked for at once (HEAD requests in flight).
pub const HEADS: usize = 16;

/// The plan reading the archived rows that count, in the full table schema, or `None` when
/// no object can hold rows the query wants.
///
/// # Errors
/// [`Error::Archive`] when an object whose size the archive log does not record is missing
/// or unreadable (one whose size it records fails the read instead, naming the object);
/// engine errors.
pub async fn plan(
    state: &dyn Session,
    store: &Arc<dyn ObjectStore>,
    schema: &SchemaRef,
    archived: &[Archived],
    restored: &[Restored],
    filters: &[Expr],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (lo, hi) = crate::pushdown::time_range(filters);
    let df_schema = DFSchema::try_from(schema.clone())?;
    let predicate = filters
        .iter()
        .cloned()
        .reduce(Expr::and)
        .map(|e| state.create_physical_expr(e, &df_schema))
        .transpose()?;
    let url = ObjectStoreUrl::parse(STORE_URL)?;
    let mut plain = Vec::new();
    let mut held: Vec<(PartitionedFile, Expr)> = Vec::new();
    // Each object's size: as the archive log records it, or, when unknown, from a HEAD
    // ([`HEADS`] at a time; one round trip each on S3). The footer cache below keys its
    // entries by path and checks them against the size (and last change, unknown here:
    // objects are never rewritten under their name, so none is needed).
    let wanted: Vec<&Archived> = archived
        .iter()
        .filter(|a| overlaps(&a.range, lo, hi))
        .collect();
    let heads = wanted.iter().map(|a| {
        let (store, path, bytes) = (store.clone(), a.path.clone(), a.bytes);
        async move {
            match bytes {
                Some(size) => Ok(ObjectMeta {
                    location: Path::from(path.as_str()),
                    last_modified: DateTime::<Utc>::UNIX_EPOCH,
                    size,
                    e_tag: None,
                    version: None,
                }),
                None => store
                    .head(&Path::from(path.as_str()))
                    .await
                    .map_err(|e| Error::Archive(format!("{path}: {e}"))),
            }
        }
    });
    let metas: Vec<ObjectMeta> = futures::stream::iter(heads.collect::<Vec<_>>())
        .buffered(HEADS)
        .try_collect()
        .await?;
    for (a, mut meta) in wanted.iter().zip(metas) {
        // The object's path as the archive's store names it: a store under a prefix (an
        // `s3://bucket/prefix` root) may answer a HEAD with the prefixed location, which the
        // same store would prefix again on the GET.
        meta.location = Path::from(a.path.as_str());
        let file = PartitionedFile::from(meta);
        let windows: Vec<&Restored> = restored.iter().filter(|r| r.path == a.path).collect();
        match not_restored(&windows) {
            Some(f) => held.push((file, f)),
            None => plain.push(file),
        }
    }
    // Footers (and page indexes) parsed once per object and kept in the engine's file
    // metadata cache (DataFusion's `CachedParquetFileReaderFactory`, as its own Parquet
    // tables use; entries are valid while the object's size and last change are the same).
    // Without it every query read and parsed every footer again.
    let runtime = state.runtime_env();
    let readers = Arc::new(CachedParquetFileReaderFactory::new(
        runtime.object_store(&ObjectStoreUrl::parse(STORE_URL)?)?,
        runtime.cache_manager.get_file_metadata_cache(),
    ));
    let source = || {
        let s =
            ParquetSource::new(schema.clone()).with_parquet_file_reader_factory(readers.clone());
        Arc::new(match &predicate {
            Some(p) => s.with_predicate(p.clone()),
            None => s,
        })
    };
    let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    if !plain.is_empty() {
        // The engine's partitions read the files between them (one group per partition, not
        // one per file: each partition of a sort or join above holds memory of its own).
        let n = state.config().target_partitions().clamp(1, plain.len());
        let mut groups: Vec<Vec<PartitionedFile>> = (0..n).map(|_| Vec::new()).collect();
        for (i, f) in plain.into_iter().enumerate() {
            groups[i % n].push(f);
        }
        let b = FileScanConfigBuilder::new(url.clone(), source())
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect());
        parts.push(DataSourceExec::from_data_source(b.build()));
    }
    for (file, keep) in held {
        let scan = DataSourceExec::from_data_source(
            FileScanConfigBuilder::new(url.clone(), source())
                .with_file(file)
                .build(),
        );
        let keep = state.create_physical_expr(keep, &df_schema)?;
        parts.push(Arc::new(FilterExec::try_new(keep, scan)?));
    }
    Ok(match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(datafusion::physical_plan::union::UnionExec::try_new(parts)?),
    })
}

/// [`plan`] with its output projected to `projected` (a projection of `schema`): the
/// archive's part of a scan of the table.
///
/// # Errors
/// As [`plan`].
pub async fn projected(
    state: &dyn Session,
    store: &Arc<dyn ObjectStore>,
    schema: &SchemaRef,
    projected: &SchemaRef,
    archived: &[Archived],
    restored: &[Restored],
    filters: &[Expr],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(a) = plan(state, store, schema, archived, restored, filters).await? else {
        return Ok(None);
    };
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projected
        .fields()
        .iter()
        .map(|f| {
            let i = schema.index_of(f.name())?;
            Ok((
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            ))
        })
        .collect::<datafusion::error::Result<_>>()?;
    Ok(Some(Arc::new(ProjectionExec::try_new(exprs, a)?)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use arrow::array::{
        Array, ArrayRef, Float64Array, Int16Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::record_batch::RecordBatch;
    use arrow::util::pretty::pretty_format_batches;
    use async_trait::async_trait;
    use datafusion::catalog::TableProvider;
    use datafusion::datasource::TableType;
    use datafusion::logical_expr::TableProviderFilterPushDown;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use object_store::memory::InMemory;
    use object_store::PutPayload;
    use vitalsink_archiver::export::format;

    /// The table over the archive alone, as [`crate::table::Measurements`] reads it.
    #[derive(Debug)]
    struct ArchiveTable {
        store: Arc<dyn ObjectStore>,
        archived: Vec<Archived>,
    }

    #[async_trait]
    impl TableProvider for ArchiveTable {
        fn schema(&self) -> SchemaRef {
            crate::table::schema()
        }
        fn table_type(&self) -> TableType {
            TableType::Base
        }
        fn supports_filters_pushdown(
            &self,
            filters: &[&Expr],
        ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
            Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
        }
        async fn scan(
            &self,
            state: &dyn Session,
            projection: Option<&Vec<usize>>,
            filters: &[Expr],
            _limit: Option<usize>,
        ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
            let schema = crate::table::schema();
            let p: SchemaRef = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema.clone(),
            };
            Ok(projected(
                state,
                &self.store,
                &schema,
                &p,
                &self.archived,
                &[],
                filters,
            )
            .await?
            .expect("objects overlap"))
        }
    }

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    fn utc(v: Vec<Option<i64>>) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    }

    fn parquet(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        out
    }

    /// Two days' objects: one written before schema version 12 (seven columns), one after.
    async fn mixed_archive() -> (Arc<dyn ObjectStore>, Vec<Archived>) {
        let v1: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["p1", "p1"])),
            Arc::new(StringArray::from(vec!["hr", "hr"])),
            utc(vec![
                Some(ts("2024-01-01T23:30:00Z")),
                Some(ts("2024-01-01T10:00:00Z")),
            ]),
            Arc::new(Float64Array::from(vec![60.0, 70.0])),
            Arc::new(StringArray::from(vec![Some("bpm"), Some("bpm")])),
            Arc::new(StringArray::from(vec![None::<&str>, None])),
            Arc::new(StringArray::from(vec![None::<&str>, None])),
        ];
        let schema_v1 = format::schema_v1();
        assert_eq!(schema_v1.fields().len(), 7);
        let old = RecordBatch::try_new(schema_v1, v1).unwrap();
        let mut v2: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["p1", "p1"])),
            Arc::new(StringArray::from(vec!["hr", "hr"])),
            // Local: 2024-01-03T13:30+14:00 and 2024-01-02T07:00-05:00.
            utc(vec![
                Some(ts("2024-01-02T23:30:00Z")),
                Some(ts("2024-01-02T12:00:00Z")),
            ]),
            Arc::new(Float64Array::from(vec![80.0, 90.0])),
            Arc::new(StringArray::from(vec![Some("bpm"), Some("bpm")])),
            Arc::new(StringArray::from(vec![Some("watch"), None])),
            Arc::new(StringArray::from(vec![None::<&str>, None])),
        ];
        v2.extend([
            Arc::new(Int16Array::from(vec![840, -300])) as ArrayRef,
            Arc::new(Int16Array::from(vec![0, 0])),
            utc(vec![
                Some(ts("2024-01-02T23:30:01Z")),
                Some(ts("2024-01-02T12:00:01Z")),
            ]),
            Arc::new(Int16Array::from(vec![0, 1])),
            Arc::new(StringArray::from(vec!["vitals", "vitals"])),
            Arc::new(Int32Array::from(vec![3, 4])),
            Arc::new(Int64Array::from(vec![100, 101])),
        ]);
        let new = RecordBatch::try_new(format::schema(), v2).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let day = |d: &str| {
            let s = chrono::DateTime::parse_from_rfc3339(d).unwrap().to_utc();
            (s, s + chrono::Duration::days(1))
        };
        let mut archived = Vec::new();
        for (path, batch, range) in [
            (
                "s0/date=2024-01-01/old.parquet",
                &old,
                day("2024-01-01T00:00:00Z"),
            ),
            (
                "s0/date=2024-01-02/new.parquet",
                &new,
                day("2024-01-02T00:00:00Z"),
            ),
        ] {
            let bytes = parquet(batch);
            // The old object's size as the archive log records it, the new one's unknown
            // (asked of the store): every test reads both ways.
            let size = (archived.is_empty()).then_some(bytes.len() as u64);
            store
                .put(&Path::from(path), PutPayload::from(bytes))
                .await
                .unwrap();
            archived.push(Archived {
                path: path.into(),
                range,
                bytes: size,
            });
        }
        (store, archived)
    }

    /// The size the archive log records is the one the scan reads by (no HEAD): recorded
    /// wrong, the read fails instead of reading another object's bytes.
    #[tokio::test]
    async fn the_logged_size_is_the_one_read_by() {
        let (store, mut archived) = mixed_archive().await;
        let size = archived[0].bytes.expect("recorded");
        for (recorded, ok) in [(size, true), (size - 1, false), (size + 100, false)] {
            archived[0].bytes = Some(recorded);
            let ctx = SessionContext::new();
            ctx.register_object_store(&url::Url::parse(STORE_URL).unwrap(), store.clone());
            let table = ArchiveTable {
                store: store.clone(),
                archived: archived.clone(),
            };
            ctx.register_table("measurements", Arc::new(table)).unwrap();
            let got = match ctx.sql("SELECT count(*) FROM measurements").await {
                Ok(df) => df.collect().await.map(|b| text(&b)),
                Err(e) => Err(e),
            };
            match got {
                Ok(t) => assert!(ok && t.contains("| 4 "), "recorded {recorded}: {t}"),
                Err(e) => assert!(!ok, "recorded {recorded}: {e}"),
            }
        }
    }

    /// A context like the engine's over the archive alone, one partition (both objects in
    /// one file group, so one reader meets both layouts), or `partitions`.
    async fn context(partitions: usize) -> SessionContext {
        let (store, archived) = mixed_archive().await;
        let ctx = SessionContext::new_with_config(
            SessionConfig::new().with_target_partitions(partitions),
        );
        ctx.register_object_store(&url::Url::parse(STORE_URL).unwrap(), store.clone());
        ctx.register_table("measurements", Arc::new(ArchiveTable { store, archived }))
            .unwrap();
        ctx
    }

    /// Runs `sql` after the engine's policy check.
    async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let stmt = state.sql_to_statement(sql, &dialect).unwrap();
        crate::engine::policy::check(&stmt).expect("the engine allows it");
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    fn text(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn old_and_new_objects_read_into_one_schema() {
        for partitions in [1, 4] {
            let ctx = context(partitions).await;
            let all = run(&ctx, "SELECT * FROM measurements ORDER BY ts").await;
            assert_eq!(all.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
            assert_eq!(all[0].schema().fields().len(), 14);
            let got = text(&all);
            let want = "\
+----------------+--------+----------------------+-------+------+-----------+----------+----------------+------------+----------------------+------------------+-----------+---------------+------------+
| participant_id | metric | ts                   | value | unit | device_id | study_id | utc_offset_min | occurrence | received_at          | received_at_type | src_topic | src_partition | src_offset |
+----------------+--------+----------------------+-------+------+-----------+----------+----------------+------------+----------------------+------------------+-----------+---------------+------------+
| p1             | hr     | 2024-01-01T10:00:00Z | 70.0  | bpm  |           |          |                |            |                      |                  |           |               |            |
| p1             | hr     | 2024-01-01T23:30:00Z | 60.0  | bpm  |           |          |                |            |                      |                  |           |               |            |
| p1             | hr     | 2024-01-02T12:00:00Z | 90.0  | bpm  |           |          | -300           | 0          | 2024-01-02T12:00:01Z | 1                | vitals    | 4             | 101        |
| p1             | hr     | 2024-01-02T23:30:00Z | 80.0  | bpm  | watch     |          | 840            | 0          | 2024-01-02T23:30:01Z | 0                | vitals    | 3             | 100        |
+----------------+--------+----------------------+-------+------+-----------+----------+----------------+------------+----------------------+------------------+-----------+---------------+------------+";
            assert_eq!(got, want, "{got}");
            let counts = text(
                &run(
                    &ctx,
                    "SELECT count(*) AS n, count(src_offset) AS lineage, \
                     count(*) FILTER (WHERE occurrence IS NULL) AS before_v12 FROM measurements",
                )
                .await,
            );
            assert!(counts.contains("| 4 | 2       | 2          |"), "{counts}");
        }
    }

    #[tokio::test]
    async fn filters_on_columns_old_objects_lack() {
        let ctx = context(1).await;
        for (sql, want) in [
            ("SELECT src_offset FROM measurements WHERE src_partition = 3", vec![Some(100)]),
            (
                "SELECT src_offset FROM measurements WHERE src_offset >= 100 AND src_topic = 'vitals' ORDER BY src_offset",
                vec![Some(100), Some(101)],
            ),
            (
                "SELECT src_offset FROM measurements WHERE received_at > TIMESTAMP '2024-01-02T12:00:00Z'",
                vec![Some(100), Some(101)],
            ),
            (
                "SELECT src_offset FROM measurements WHERE utc_offset_min < 0",
                vec![Some(101)],
            ),
            (
                "SELECT src_offset FROM measurements WHERE src_partition IS NULL",
                vec![None, None],
            ),
            (
                "SELECT src_offset FROM measurements WHERE src_partition IN (3, 9) OR occurrence = 5",
                vec![Some(100)],
            ),
        ] {
            let b = run(&ctx, sql).await;
            let got: Vec<Option<i64>> = b
                .iter()
                .flat_map(|b| {
                    let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    (0..a.len())
                        .map(|i| a.is_valid(i).then(|| a.value(i)))
                        .collect::<Vec<_>>()
                })
                .collect();
            let mut got = got;
            got.sort();
            assert_eq!(got, want, "{sql}");
        }
    }

    /// The README's daily mean per participant's local day (`query` and "Provenance"
    /// sections). DataFusion 55 has no `integer * INTERVAL`, so the offset becomes a
    /// `Duration` (the product is Int64: +14:00 = 50400 s does not overflow the Int16 column).
    const LOCAL_DAY_MEAN_SQL: &str = "
    SELECT participant_id, metric,
           CAST(ts + arrow_cast(utc_offset_min * 60, 'Duration(Second)') AS DATE) AS local_day,
           count(*), avg(value)
      FROM measurements GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

    /// The README's local wall-clock time: a timestamp without a time zone.
    const LOCAL_TIME_SQL: &str = "SELECT ts,
       arrow_cast(ts + arrow_cast(utc_offset_min * 60, 'Duration(Second)'),
                  'Timestamp(Microsecond, None)') AS local_time
  FROM measurements ORDER BY ts";

    /// The README's local-day mean.
    #[tokio::test]
    async fn daily_mean_per_local_day() {
        let ctx = context(4).await;
        let got = text(&run(&ctx, LOCAL_DAY_MEAN_SQL).await);
        // The two rows of the old object have no offset: no local day.
        let want = "\
+----------------+--------+------------+----------+-------------------------+
| participant_id | metric | local_day  | count(*) | avg(measurements.value) |
+----------------+--------+------------+----------+-------------------------+
| p1             | hr     | 2024-01-02 | 1        | 90.0                    |
| p1             | hr     | 2024-01-03 | 1        | 80.0                    |
| p1             | hr     |            | 2        | 65.0                    |
+----------------+--------+------------+----------+-------------------------+";
        assert_eq!(got, want, "{got}");
        let got = text(&run(&ctx, LOCAL_TIME_SQL).await);
        let want = "\
+----------------------+---------------------+
| ts                   | local_time          |
+----------------------+---------------------+
| 2024-01-01T10:00:00Z |                     |
| 2024-01-01T23:30:00Z |                     |
| 2024-01-02T12:00:00Z | 2024-01-02T07:00:00 |
| 2024-01-02T23:30:00Z | 2024-01-03T13:30:00 |
+----------------------+---------------------+";
        assert_eq!(got, want, "{got}");
    }
}
