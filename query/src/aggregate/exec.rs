//! [`ShardAggregateExec`]: one shard's partial aggregates, computed by the shard in the
//! query's snapshot, streamed as the partial aggregate's output would have been.

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use std::sync::Arc;

use crate::sessions::Session;
use crate::shard_scan::{one_partition, stream};

/// A shard's `SELECT <keys>, <states> FROM measurements WHERE … GROUP BY <keys>`: one
/// partition, the partial aggregate's schema. `EXPLAIN` shows
/// `ShardAggregateExec: shard=…, sql=…`.
pub struct ShardAggregateExec {
    shard: String,
    sql: String,
    schema: SchemaRef,
    session: Session,
    props: Arc<PlanProperties>,
}

impl std::fmt::Debug for ShardAggregateExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShardAggregateExec: shard={}, sql={}",
            self.shard, self.sql
        )
    }
}

impl ShardAggregateExec {
    /// Runs `sql` (its select list giving `schema`'s columns in order) on `session`, the
    /// shard's snapshot session.
    pub fn new(shard: String, sql: String, schema: SchemaRef, session: Session) -> Self {
        Self {
            shard,
            sql,
            props: one_partition(&schema),
            schema,
            session,
        }
    }

    /// The statement the shard runs.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

impl DisplayAs for ShardAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "ShardAggregateExec: shard={}, sql={}",
            self.shard, self.sql
        )
    }
}

impl ExecutionPlan for ShardAggregateExec {
    fn name(&self) -> &str {
        "ShardAggregateExec"
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
        stream(&self.session, &self.shard, &self.sql, &self.schema)
    }
}
