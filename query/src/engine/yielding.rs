//! Joins yield, so that a runaway statement can be stopped.
//!
//! A statement is stopped by dropping its stream ([`crate::flight::admission`]): DataFusion
//! aborts the tasks it spawned, and a task stops at its next yield. A join can emit batch
//! after batch from the rows it holds without polling its input (a cross join emits one
//! batch per held row for every probe batch), so the task running it never yields: measured
//! here, `SELECT count(*) FROM measurements a CROSS JOIN (SELECT … FROM measurements b CROSS
//! JOIN measurements c)` kept both cores busy for minutes past its statement timeout, and
//! starved the server's own timers and gRPC tasks.
//!
//! [`YieldingJoins`] runs after DataFusion's physical optimizer rules and puts a
//! `CooperativeExec` (DataFusion's, `datafusion::physical_plan::coop`) above every join:
//! each batch a join emits then takes one unit of tokio's cooperative budget (128 a turn), so
//! the task yields at least every 128 batches. DataFusion's own `EnsureCooperative` does this
//! for leaves only.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// The rule (see the module doc). A join is any operator whose name ends in `JoinExec`
/// (DataFusion 55: `CrossJoinExec`, `HashJoinExec`, `NestedLoopJoinExec`,
/// `SortMergeJoinExec`, `SymmetricHashJoinExec`, `PiecewiseMergeJoinExec`), so a join added
/// by a later release is covered too.
#[derive(Debug, Default)]
pub struct YieldingJoins;

fn is_join(plan: &dyn ExecutionPlan) -> bool {
    plan.name().ends_with("JoinExec")
}

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(if is_join(node.as_ref()) {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(node)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "YieldingJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
