//! One shard's part of a scan: a `SELECT` of the projected columns with the pushed-down
//! filters, run in the shard's snapshot ([`crate::snapshot`]), streamed into Arrow batches.
//!
//! Memory: a task reads the rows and sends batches of [`BATCH_ROWS`] rows through a channel
//! of [`QUEUE`] batches; the engine pulls them. A shard that fails mid-stream ends the stream
//! with an error naming it, so the query fails instead of answering with part of the data.
//!
//! The same reader serves [`crate::aggregate::ShardAggregateExec`] (a shard's partial
//! aggregates, `stream`). Every value read is counted in bytes ([`bytes_received`], and the
//! counter `vitalsink_query_shard_bytes_total`): what travelled from the shards.

use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::sessions::{Conn, Session};
use crate::shard_rows::{append, builders, finish, row_bytes};

/// Rows per batch.
pub const BATCH_ROWS: usize = 8192;
/// Batches buffered per shard ahead of the engine.
pub const QUEUE: usize = 2;

/// Bytes of values read from every shard by this process (the sum of the values' lengths in
/// PostgreSQL's binary format; NULL counts 0).
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of values read from the shards by this process so far (see `BYTES`): a benchmark
/// takes the difference around one query.
pub fn bytes_received() -> u64 {
    BYTES.load(Ordering::Relaxed)
}

/// The scan of one shard: one partition; `EXPLAIN` shows `ShardScanExec: shard=…, sql=…`.
pub struct ShardScanExec {
    shard: String,
    /// The select list (one entry per column of `schema`, [`select_expr`]).
    select: String,
    /// `WHERE` terms over `measurements`, ANDed: the pushed-down filters and a move's
    /// exclusions. They are all the rows this scan returns, so a plan may run another
    /// statement over the same terms ([`crate::aggregate`]). `None` for a scan of another
    /// table ([`ShardScanExec::with_sql`]).
    terms: Option<Vec<String>>,
    sql: String,
    schema: SchemaRef,
    /// The snapshot's session, taken by the first `execute`.
    client: Session,
    props: Arc<PlanProperties>,
}

impl std::fmt::Debug for ShardScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardScanExec: shard={}, sql={}", self.shard, self.sql)
    }
}

/// `SELECT {select} FROM measurements [WHERE t1 AND t2 …]`.
pub fn measurements_sql(select: &str, terms: &[String]) -> String {
    if terms.is_empty() {
        format!("SELECT {select} FROM measurements")
    } else {
        format!(
            "SELECT {select} FROM measurements WHERE {}",
            terms.join(" AND ")
        )
    }
}

/// The properties of a plan node read from one shard: one partition, bounded.
pub(crate) fn one_partition(schema: &SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl ShardScanExec {
    /// Scans `shard`: the columns of `schema` (`select`, one entry each, [`select_expr`]) of
    /// the rows matching every one of `terms`, on `client`, a session holding the shard's
    /// snapshot.
    pub fn new(
        shard: String,
        select: String,
        terms: Vec<String>,
        schema: SchemaRef,
        client: Conn,
    ) -> Self {
        let sql = measurements_sql(&select, &terms);
        Self {
            shard,
            select,
            terms: Some(terms),
            sql,
            props: one_partition(&schema),
            schema,
            client: Arc::new(Mutex::new(Some(client))),
        }
    }

    /// Scans `shard` with `sql`, any statement over any table whose select list gives
    /// `schema` (the trial tables, [`crate::trial_tables`]).
    pub fn with_sql(
        shard: String,
        sql: String,
        schema: SchemaRef,
        client: tokio_postgres::Client,
    ) -> Self {
        Self {
            shard,
            select: String::new(),
            terms: None,
            sql,
            props: one_partition(&schema),
            schema,
            client: Arc::new(Mutex::new(Some(Conn::Plain(client)))),
        }
    }

    /// The shard scanned.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The `WHERE` terms (ANDed) over `measurements` that select every row this scan
    /// returns; `None` for a scan of another table.
    pub fn terms(&self) -> Option<&[String]> {
        self.terms.as_deref()
    }

    /// The select list.
    pub fn select(&self) -> &str {
        &self.select
    }

    /// The shard's snapshot session (shared: whichever plan node runs first takes it).
    pub fn session(&self) -> Session {
        self.client.clone()
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ShardScanExec: shard={}, sql={}", self.shard, self.sql)
    }
}

/// The `SELECT` list entry of a column: a timestamp (`ts`, `received_at`) as integer
/// microseconds (exact, no time zone; NULL stays NULL), any other column as it is.
pub fn select_expr(field: &Field) -> String {
    let name = field.name();
    if matches!(field.data_type(), DataType::Timestamp(_, _)) {
        format!("(extract(epoch FROM {name}) * 1000000)::int8")
    } else {
        name.clone()
    }
}

async fn read(
    conn: Conn,
    shard: String,
    sql: String,
    schema: SchemaRef,
    tx: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
    // The query was stopped (cancelled, timed out, the client went away): the receiver is
    // dropped, and so is this read with the shard's session (closed, not pooled), even while
    // the shard is still working on a row.
    let client = match conn.client(&shard) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(DataFusionError::External(Box::new(e)))).await;
            return;
        }
    };
    let completed = tokio::select! {
        () = tx.closed() => false,
        done = stream_rows(client, shard, sql, schema, &tx) => done,
    };
    conn.release(completed).await;
}

/// Streams the rows; whether it read them all.
async fn stream_rows(
    client: &tokio_postgres::Client,
    shard: String,
    sql: String,
    schema: SchemaRef,
    tx: &mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) -> bool {
    let fail = |e: tokio_postgres::Error| {
        DataFusionError::External(Box::new(Error::Shard {
            shard: shard.clone(),
            message: vitalsink_common::error::describe_postgres(&e),
        }))
    };
    let rows = match client.query_raw(&sql, std::iter::empty::<i32>()).await {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(fail(e))).await;
            return false;
        }
    };
    futures::pin_mut!(rows);
    let mut cols = match builders(&schema) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return false;
        }
    };
    let mut n = 0usize;
    let mut bytes = 0u64;
    let count = |bytes: &mut u64| {
        BYTES.fetch_add(*bytes, Ordering::Relaxed);
        metrics::counter!("vitalsink_query_shard_bytes_total").increment(*bytes);
        *bytes = 0;
    };
    while let Some(row) = rows.next().await {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                count(&mut bytes);
                let _ = tx.send(Err(fail(e))).await;
                return false;
            }
        };
        bytes += row_bytes(&row);
        for (i, c) in cols.iter_mut().enumerate() {
            if let Err(e) = append(c, &row, i) {
                let _ = tx.send(Err(fail(e))).await;
                return false;
            }
        }
        n += 1;
        if n == BATCH_ROWS {
            count(&mut bytes);
            if tx.send(finish(&schema, &mut cols, n)).await.is_err() {
                return false; // the query was cancelled
            }
            n = 0;
        }
    }
    count(&mut bytes);
    if n > 0 && tx.send(finish(&schema, &mut cols, n)).await.is_err() {
        return false;
    }
    true
}

impl ExecutionPlan for ShardScanExec {
    fn name(&self) -> &str {
        "ShardScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        stream(&self.client, &self.shard, &self.sql, &self.schema)
    }
}

/// Runs `sql` (its select list giving `schema`'s columns, in order, of the types
/// [`builders`] reads) on `session`, taking it, and streams the rows as batches.
///
/// # Errors
/// An internal error when the session was taken already (a plan ran one shard's snapshot
/// twice).
pub(crate) fn stream(
    session: &Session,
    shard: &str,
    sql: &str,
    schema: &SchemaRef,
) -> datafusion::error::Result<SendableRecordBatchStream> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let client = session.lock().ok().and_then(|mut g| g.take());
    let Some(c) = client else {
        return Err(DataFusionError::Internal(format!(
            "shard {shard}'s snapshot was read twice"
        )));
    };
    tokio::spawn(read(
        c,
        shard.to_string(),
        sql.to_string(),
        schema.clone(),
        tx,
    ));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema.clone(),
        stream,
    )))
}
