//! Finer keys for the shards: a group key built from others by string operations is
//! grouped on its parts, and built after.
//!
//! `GROUP BY participant_id || '|' || metric || '|' || CAST(CAST(date_trunc('day', ts) AS
//! DATE) AS VARCHAR)` makes every engine concatenate and format a string for every row before
//! grouping (measured: 2.5 s of a shard's 2.6 M rows against 1.4 s for grouping by the three
//! parts). Partial aggregates of finer groups merge into coarser ones, so the shards (and the
//! archive's partial aggregate) group by the key's parts, here `participant_id`, `metric` and
//! `date_trunc('day', ts)`, and the engine builds the key once per partial row, before the
//! final aggregate merges partial rows of equal keys. A key is taken apart only through
//! string concatenation and casts to text (deterministic, and as many parts' values as the
//! key's, give or take strings that concatenate alike); literals stay in the key.

use arrow::datatypes::DataType;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal, TryCastExpr};
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// Name of part `i` in the partial aggregate of the parts.
pub fn part_name(i: usize) -> String {
    format!("__vitalsink_part_{i}")
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// Whether the key is built from its children by string operations.
fn is_combinator(e: &Arc<dyn PhysicalExpr>) -> bool {
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        return *b.op() == Operator::StringConcat;
    }
    if let Some(c) = e.downcast_ref::<CastExpr>() {
        return is_text(c.cast_type());
    }
    if let Some(c) = e.downcast_ref::<TryCastExpr>() {
        return is_text(c.cast_type());
    }
    false
}

/// `e` with each part replaced by a column of `parts` (added when new), or `None` when a
/// child cannot be replaced.
pub fn split(
    e: &Arc<dyn PhysicalExpr>,
    parts: &mut Vec<Arc<dyn PhysicalExpr>>,
) -> Option<Arc<dyn PhysicalExpr>> {
    if e.downcast_ref::<Literal>().is_some() {
        return Some(e.clone());
    }
    if is_combinator(e) {
        let children = e
            .children()
            .into_iter()
            .map(|c| split(c, parts))
            .collect::<Option<Vec<_>>>()?;
        return e.clone().with_new_children(children).ok();
    }
    let shown = e.to_string();
    let i = match parts.iter().position(|p| p.to_string() == shown) {
        Some(i) => i,
        None => {
            parts.push(e.clone());
            parts.len() - 1
        }
    };
    Some(Arc::new(Column::new(&part_name(i), i)))
}
