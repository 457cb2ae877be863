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
mod tests;
