//! Aggregates computed on the shards: each shard reduces its own rows, and only partial
//! results travel to the engine, as in Citus's distributed aggregates (partials on the
//! workers, combined on the coordinator).
//!
//! DataFusion 55 has no aggregate pushdown into a `TableProvider` (apache/datafusion#8699),
//! so this is a physical optimizer rule, [`AggregatePushdown`], run first. DataFusion plans
//! a `GROUP BY` as `AggregateExec(Final…) ← AggregateExec(Partial) ← … ← UnionExec[shard
//! scans…, archive]`. For each shard's branch under the partial aggregate, the rule writes the
//! keys, the aggregates' partial states ([`partial`]) and the branch's filters as PostgreSQL
//! ([`sql`]) and puts a [`ShardAggregateExec`] there, which runs
//! `SELECT keys, states FROM measurements WHERE … GROUP BY keys` in the query's snapshot of
//! that shard: the same rows the scan would have read (the scan's own `WHERE` terms, a move's
//! exclusions included, plus every filter between), reduced by the shard. The archive's
//! branch keeps DataFusion's partial aggregate over the Parquet scan (row groups pruned by
//! their statistics). The final aggregate, `HAVING`, `ORDER BY` and the rest run in the engine
//! over the union of partials, exactly as before: results are the same, to floating-point
//! summation order (the test `query_pushdown` compares every form with the rule off).
//!
//! What stays in the engine (today's plan, same results): a branch with any expression,
//! aggregate or type [`sql`]/[`partial`] do not write (each shard's branch is decided alone);
//! grouping sets; `DISTINCT`, `FILTER` or ordered aggregates. `--aggregate-pushdown false`
//! turns the rule off.

pub mod exec;
pub mod keys;
pub mod partial;
pub mod sql;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

pub use exec::ShardAggregateExec;

use crate::shard_scan::{measurements_sql, ShardScanExec};
use sql::{is_step, Branch};

/// The rule (see the module doc).
#[derive(Debug, Default)]
pub struct AggregatePushdown;

impl PhysicalOptimizerRule for AggregatePushdown {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match rewrite(agg)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "vitalsink_aggregate_pushdown"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The steps below `node` down to the first node that is not one, and that node.
fn chain(
    mut node: &Arc<dyn ExecutionPlan>,
) -> (Vec<&Arc<dyn ExecutionPlan>>, &Arc<dyn ExecutionPlan>) {
    let mut steps = Vec::new();
    while is_step(node.as_ref()) {
        let Some(child) = node.children().into_iter().next() else {
            break;
        };
        steps.push(node);
        node = child;
    }
    (steps, node)
}

/// `agg` with its shards' branches computed by the shards, or `None` when none can be.
fn rewrite(agg: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let mode = *agg.mode();
    if !matches!(
        mode,
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    ) || agg.group_expr().has_grouping_set()
    {
        return Ok(None);
    }
    // The keys' parts ([`keys`]): the partial aggregates group by them, and the keys are
    // built over the partial rows.
    let mut parts = Vec::new();
    let built: Option<Vec<Arc<dyn PhysicalExpr>>> = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(e, _)| keys::split(e, &mut parts))
        .collect();
    let (group, built) = match built {
        Some(b)
            if b.iter()
                .zip(agg.group_expr().expr())
                .any(|(x, (e, _))| x.to_string() != e.to_string()) =>
        {
            let named = parts
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), keys::part_name(i)))
                .collect();
            (PhysicalGroupBy::new_single(named), Some(b))
        }
        _ => (agg.group_expr().clone(), None),
    };
    let partial = AggregateExec::try_new(
        AggregateMode::Partial,
        group.clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        agg.input().clone(),
        agg.input_schema(),
    )?;
    let (top, below) = chain(agg.input());
    let union = below.downcast_ref::<UnionExec>().is_some();
    let children = if union { below.children() } else { vec![below] };
    let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let mut kept: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    for child in children {
        let (steps, leaf) = chain(child);
        let shard = leaf.downcast_ref::<ShardScanExec>().and_then(|scan| {
            let mut all = top.clone();
            all.extend(steps);
            on_shard(&partial, &Branch { steps: all, scan })
        });
        match shard {
            Some(s) => parts.push(Arc::new(s)),
            None => kept.push(child.clone()),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if !kept.is_empty() {
        // The branches left (the archive's, and any shard's the rule could not write) under
        // the engine's own partial aggregate, through the same steps as before.
        let mut input = UnionExec::try_new(kept)?;
        for step in top.iter().rev() {
            input = (*step).clone().replace_children(
                vec![input],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
        }
        parts.push(Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            group,
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            input,
            agg.input_schema(),
        )?));
    }
    let mut partials = UnionExec::try_new(parts)?;
    if let Some(built) = built {
        // The keys over the partial rows of their parts; the states as they are.
        let want = match mode {
            AggregateMode::Partial => agg.schema(),
            _ => AggregateExec::try_new(
                AggregateMode::Partial,
                agg.group_expr().clone(),
                agg.aggr_expr().to_vec(),
                agg.filter_expr().to_vec(),
                agg.input().clone(),
                agg.input_schema(),
            )?
            .schema(),
        };
        let n = built.len();
        let offset = partials.schema().fields().len() - (want.fields().len() - n);
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = built
            .into_iter()
            .zip(want.fields().iter())
            .map(|(e, f)| (e, f.name().clone()))
            .collect();
        for (k, f) in want.fields().iter().enumerate().skip(n) {
            let i = offset + k - n;
            exprs.push((Arc::new(Column::new(f.name(), i)), f.name().clone()));
        }
        partials = Arc::new(ProjectionExec::try_new(exprs, partials)?);
    }
    Ok(Some(match mode {
        AggregateMode::Partial => partials,
        _ => Arc::new(AggregateExec::try_new(
            AggregateMode::Final,
            agg.group_expr().as_final(),
            agg.aggr_expr().to_vec(),
            vec![None; agg.aggr_expr().len()],
            Arc::new(CoalescePartitionsExec::new(partials)),
            agg.input_schema(),
        )?),
    }))
}

/// The shard's partial aggregate for `branch`, or `None` when it cannot be written.
fn on_shard(partial: &AggregateExec, branch: &Branch<'_>) -> Option<ShardAggregateExec> {
    let (list, keys) = partial::select_list(partial, branch)?;
    let mut terms = branch.scan.terms()?.to_vec();
    terms.extend(branch.filters()?);
    let sql = if keys.is_empty() {
        measurements_sql(&list.join(", "), &terms)
    } else {
        // The keys are named in a subquery (PostgreSQL flattens it) and grouped by name:
        // the select list then converts each group's key once (a bucket of `ts` to integer
        // microseconds: `extract` returns `numeric` since PostgreSQL 14), not each row's,
        // and a constant key is no `GROUP BY 'all'` (an error) or `GROUP BY 2` (a position).
        let names: Vec<String> = (0..keys.len()).map(partial::key_name).collect();
        let named: Vec<String> = keys
            .iter()
            .zip(&names)
            .map(|(k, n)| format!("{k} AS {n}"))
            .collect();
        let rows = measurements_sql(&format!("*, {}", named.join(", ")), &terms);
        format!(
            "SELECT {} FROM ({rows}) AS m GROUP BY {}",
            list.join(", "),
            names.join(", ")
        )
    };
    Some(ShardAggregateExec::new(
        branch.scan.shard().to_string(),
        sql,
        partial.schema(),
        branch.scan.session(),
    ))
}
