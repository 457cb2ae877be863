//! Tests of the archive scan over an in-memory store with one object written before schema
//! version 12 and one after: the size the archive log records, both layouts read into one
//! table schema, filters on the columns old objects lack, and the README's local-time queries.

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
    let ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
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
