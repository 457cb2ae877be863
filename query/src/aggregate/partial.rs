//! What a shard computes for one partial aggregate: the `SELECT` list entries (group keys,
//! then each aggregate's state columns) that give exactly the columns DataFusion's
//! `AggregateExec(Partial)` would have produced from the shard's rows, so the engine's final
//! aggregate combines them with the archive's partials as if it had computed them itself.
//!
//! State layouts (read by position; DataFusion 55, `datafusion-functions-aggregate`):
//! `count` → `Int64`; `sum(float8)` → `Float64`, `sum` of a small integer → `Int64`;
//! `min`/`max` → the value's type; `avg(float8)` → `[count: UInt64, sum: Float64]` (Citus
//! rewrites `avg` to `sum` and `count` the same way). Each state column's type is checked
//! against the aggregate's own `state_fields`; any other aggregate, `DISTINCT`, `FILTER`,
//! an `ORDER BY` inside the aggregate or a grouping set keeps the aggregate in the engine.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::ExecutionPlan;

use super::sql::{is_utc_time, Branch};

/// The select list entry reading a value of type `t` into the column builders of
/// [`crate::shard_scan`] (timestamps as integer microseconds, dates as days since
/// 1970-01-01), or `None` for a type they do not read.
fn output(x: &str, t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Utf8 | DataType::Utf8View => x.to_string(),
        DataType::Float64 => format!("({x})::float8"),
        DataType::Int64 | DataType::UInt64 => format!("({x})::int8"),
        DataType::Int32 => format!("({x})::int4"),
        DataType::Int16 => format!("({x})::int2"),
        DataType::Date32 => format!("(({x}) - date '1970-01-01')"),
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) if is_utc_time(t) => {
            format!("(extract(epoch FROM {x}) * 1000000000)::int8")
        }
        t if is_utc_time(t) => format!("(extract(epoch FROM {x}) * 1000000)::int8"),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            format!("(extract(epoch FROM {x}) * 1000000)::int8")
        }
        _ => return None,
    })
}

/// The shard's `SELECT` list and its group keys (as PostgreSQL, before the select list
/// converts them) for `agg` over `branch`, or `None` when any part has no exact PostgreSQL
/// form. The list refers to key `i` as [`key_name`]`(i)`.
pub fn select_list(agg: &AggregateExec, branch: &Branch<'_>) -> Option<(Vec<String>, Vec<String>)> {
    let group = agg.group_expr();
    if group.has_grouping_set() || agg.filter_expr().iter().any(Option::is_some) {
        return None;
    }
    // The partial aggregate's output: keys then states, in this order and these types.
    let want = agg.schema();
    let mut list = Vec::new();
    let mut keys = Vec::new();
    for (i, (e, _)) in group.expr().iter().enumerate() {
        let t = branch.data_type(e, 0)?;
        (want.fields().get(i)?.data_type() == &t).then_some(())?;
        keys.push(branch.sql(e, 0)?);
        list.push(output(&key_name(i), &t)?);
    }
    for a in agg.aggr_expr() {
        list.extend(states(a, branch)?);
    }
    (want.fields().len() == list.len()).then_some(())?;
    Some((list, keys))
}

/// The name of group key `i` in the shard's SQL.
pub fn key_name(i: usize) -> String {
    format!("__vitalsink_key_{i}")
}

/// The state columns of one aggregate.
fn states(a: &AggregateFunctionExpr, branch: &Branch<'_>) -> Option<Vec<String>> {
    if a.is_distinct() || !a.order_bys().is_empty() || a.is_reversed() {
        return None;
    }
    let args = a.expressions();
    let [arg] = args.as_slice() else {
        return None;
    };
    let fields = a.state_fields().ok()?;
    let types: Vec<&DataType> = fields.iter().map(|f| f.data_type()).collect();
    let input = branch.data_type(arg, 0)?;
    let star = arg
        .downcast_ref::<Literal>()
        .is_some_and(|l| !l.value().is_null());
    let x = if star {
        String::new()
    } else {
        branch.sql(arg, 0)?
    };
    let out = match (a.fun().name(), types.as_slice()) {
        ("count", [DataType::Int64]) if star => vec!["count(*)::int8".to_string()],
        ("count", [DataType::Int64]) => vec![format!("count({x})::int8")],
        ("sum", [DataType::Float64]) if input == DataType::Float64 => {
            vec![format!("sum({x})::float8")]
        }
        ("sum", [DataType::Int64])
            if matches!(
                input,
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
            ) =>
        {
            vec![format!("sum({x})::int8")]
        }
        ("avg", [DataType::UInt64, DataType::Float64]) if input == DataType::Float64 => {
            vec![format!("count({x})::int8"), format!("sum({x})::float8")]
        }
        (f @ ("min" | "max"), [t]) if **t == input => {
            let arg = if super::sql::is_text(&input) {
                format!("{x} COLLATE \"C\"")
            } else {
                x
            };
            vec![output(&format!("{f}({arg})"), t)?]
        }
        _ => return None,
    };
    Some(out)
}
