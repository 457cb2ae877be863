//! One shard's part of a scan: a `SELECT` of the projected columns with the pushed-down
//! filters, run in the shard's snapshot ([`crate::snapshot`]), streamed into Arrow batches.
//!
//! Memory: a task reads the rows and sends batches of [`BATCH_ROWS`] rows through a channel
//! of [`QUEUE`] batches; the engine pulls them. A shard that fails mid-stream ends the stream
//! with an error naming it, so the query fails instead of answering with part of the data.

use arrow::array::{ArrayRef, Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
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
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use crate::error::Error;

/// Rows per batch.
pub const BATCH_ROWS: usize = 8192;
/// Batches buffered per shard ahead of the engine.
pub const QUEUE: usize = 2;

/// The scan of one shard: one partition; `EXPLAIN` shows `ShardScanExec: shard=…, sql=…`.
pub struct ShardScanExec {
    shard: String,
    sql: String,
    schema: SchemaRef,
    /// The snapshot's session, taken by the first `execute`.
    client: Arc<Mutex<Option<tokio_postgres::Client>>>,
    props: Arc<PlanProperties>,
}

impl std::fmt::Debug for ShardScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardScanExec: shard={}, sql={}", self.shard, self.sql)
    }
}

impl ShardScanExec {
    /// Scans `shard` with `sql` (its select list giving `schema`) on `client`, a session
    /// holding the shard's snapshot.
    pub fn new(
        shard: String,
        sql: String,
        schema: SchemaRef,
        client: tokio_postgres::Client,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            shard,
            sql,
            schema,
            client: Arc::new(Mutex::new(Some(client))),
            props: Arc::new(props),
        }
    }

    /// The shard scanned.
    pub fn shard(&self) -> &str {
        &self.shard
    }
}

impl DisplayAs for ShardScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ShardScanExec: shard={}, sql={}", self.shard, self.sql)
    }
}

/// The `SELECT` list entry of a column: `ts` as integer microseconds (exact, no time zone).
pub fn select_expr(name: &str) -> String {
    if name == "ts" {
        "(extract(epoch FROM ts) * 1000000)::int8".to_string()
    } else {
        name.to_string()
    }
}

enum Col {
    Text(StringBuilder),
    Ts(TimestampMicrosecondBuilder),
    F64(Float64Builder),
}

fn builders(schema: &SchemaRef) -> Vec<Col> {
    schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, _) => Col::Ts(TimestampMicrosecondBuilder::new()),
            DataType::Float64 => Col::F64(Float64Builder::new()),
            _ => Col::Text(StringBuilder::new()),
        })
        .collect()
}

fn finish(
    schema: &SchemaRef,
    cols: &mut [Col],
    rows: usize,
) -> Result<RecordBatch, DataFusionError> {
    let arrays: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|c| -> ArrayRef {
            match c {
                Col::Text(b) => Arc::new(b.finish()),
                Col::Ts(b) => Arc::new(b.finish().with_timezone("UTC")),
                Col::F64(b) => Arc::new(b.finish()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

async fn read(
    client: tokio_postgres::Client,
    shard: String,
    sql: String,
    schema: SchemaRef,
    tx: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
    // The query was stopped (cancelled, timed out, the client went away): the receiver is
    // dropped, and so is this read with the shard's session, even while the shard is still
    // working on a row.
    tokio::select! {
        () = tx.closed() => {}
        () = stream_rows(client, shard, sql, schema, &tx) => {}
    }
}

async fn stream_rows(
    client: tokio_postgres::Client,
    shard: String,
    sql: String,
    schema: SchemaRef,
    tx: &mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
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
            return;
        }
    };
    futures::pin_mut!(rows);
    let mut cols = builders(&schema);
    let mut n = 0usize;
    while let Some(row) = rows.next().await {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
        };
        for (i, c) in cols.iter_mut().enumerate() {
            match c {
                Col::Text(b) => b.append_option(row.get::<_, Option<&str>>(i)),
                Col::Ts(b) => b.append_option(row.get::<_, Option<i64>>(i)),
                Col::F64(b) => b.append_option(row.get::<_, Option<f64>>(i)),
            }
        }
        n += 1;
        if n == BATCH_ROWS {
            if tx.send(finish(&schema, &mut cols, n)).await.is_err() {
                return; // the query was cancelled
            }
            n = 0;
        }
    }
    if n > 0 {
        let _ = tx.send(finish(&schema, &mut cols, n)).await;
    }
    // Dropping the session ends its read-only transaction.
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
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = self.client.lock().ok().and_then(|mut g| g.take());
        let Some(c) = client else {
            return Err(DataFusionError::Internal(format!(
                "the scan of shard {} ran twice",
                self.shard
            )));
        };
        tokio::spawn(read(
            c,
            self.shard.clone(),
            self.sql.clone(),
            self.schema.clone(),
            tx,
        ));
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
