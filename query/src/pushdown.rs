//! Filters the engine hands to the `measurements` table, put to use before any row moves:
//!
//! - [`to_sql`] writes a filter as a PostgreSQL `WHERE` term, so each shard filters (and
//!   TimescaleDB excludes chunks, on `ts` terms) itself; a filter it cannot write stays with
//!   the engine only (the table reports every filter as `Inexact`, so DataFusion applies them
//!   all again above the scan: pushing down can only shrink what is read).
//! - [`participants`]: a top-level `participant_id = …` or `IN (…)` names the participants,
//!   so only the shards routing names for them are scanned.
//! - [`time_range`]: top-level bounds on `ts`, so archive objects of other chunks are not
//!   opened (and the Parquet reader prunes row groups by their statistics with the same
//!   filters).

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;
use std::collections::BTreeSet;

/// The table's columns (the hypertable's and the archive's, in table order), the only names
/// written into SQL.
pub use vitalsink_common::columns::COLUMNS;

fn column(e: &Expr) -> Option<&str> {
    column_in(e, &COLUMNS)
}

/// The name of column `e` when it is one of `columns` (the only names written into SQL).
fn column_in<'a>(e: &Expr, columns: &[&'a str]) -> Option<&'a str> {
    match e {
        Expr::Column(c) => columns.iter().copied().find(|n| *n == c.name),
        _ => None,
    }
}

/// Microseconds since the epoch of a timestamp literal.
fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(s), _) => s.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(s), _) => Some(*s),
        ScalarValue::TimestampNanosecond(Some(s), _) => Some(s.div_euclid(1_000)),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<String> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(format!("'{}'", s.replace('\'', "''"))),
        ScalarValue::Float64(Some(f)) if f.is_finite() => Some(format!("{f:?}::float8")),
        ScalarValue::Float32(Some(f)) if f.is_finite() => Some(format!("{f:?}::float8")),
        ScalarValue::Int64(Some(i)) => Some(i.to_string()),
        ScalarValue::Int32(Some(i)) => Some(i.to_string()),
        ScalarValue::Int16(Some(i)) => Some(i.to_string()),
        ScalarValue::Int8(Some(i)) => Some(i.to_string()),
        ScalarValue::UInt64(Some(i)) => Some(i.to_string()),
        ScalarValue::UInt32(Some(i)) => Some(i.to_string()),
        ScalarValue::UInt16(Some(i)) => Some(i.to_string()),
        ScalarValue::UInt8(Some(i)) => Some(i.to_string()),
        ScalarValue::Boolean(Some(b)) => Some(b.to_string()),
        // Exact to the microsecond (PostgreSQL's resolution), in UTC.
        other => micros(other)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| {
                format!(
                    "'{}'::timestamptz",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )
            }),
    }
}

fn op(o: Operator) -> Option<&'static str> {
    Some(match o {
        Operator::Eq => "=",
        Operator::NotEq => "<>",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        Operator::And => "AND",
        Operator::Or => "OR",
        _ => return None,
    })
}

/// `e` as a PostgreSQL boolean term over `measurements`, or `None` when it uses anything
/// but the table's columns, literals (text, numbers, timestamps), comparisons, `AND`, `OR`,
/// `NOT`, `IN`, `BETWEEN` and `IS [NOT] NULL`.
pub fn to_sql(e: &Expr) -> Option<String> {
    to_sql_over(e, &COLUMNS)
}

/// [`to_sql`] over another table whose pushable columns are `columns` (written unquoted:
/// plain lower-case names). Give only columns whose order is the same in PostgreSQL and the
/// engine (numbers, timestamps): a text column compares by the database's collation there.
pub fn to_sql_over(e: &Expr, columns: &[&str]) -> Option<String> {
    let column = |x: &Expr| column_in(x, columns);
    let term = |x: &Expr| {
        column(x)
            .map(str::to_string)
            .or_else(|| literal(x))
            .or_else(|| to_sql_over(x, columns))
    };
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: o, right }) => {
            let o = op(*o)?;
            Some(format!("({} {o} {})", term(left)?, term(right)?))
        }
        Expr::Not(x) => Some(format!("(NOT {})", to_sql_over(x, columns)?)),
        Expr::IsNull(x) => Some(format!("({} IS NULL)", column(x)?)),
        Expr::IsNotNull(x) => Some(format!("({} IS NOT NULL)", column(x)?)),
        Expr::InList(l) => {
            let c = column(&l.expr)?;
            let items: Option<Vec<String>> = l.list.iter().map(literal).collect();
            let items = items?;
            if items.is_empty() {
                return None;
            }
            let not = if l.negated { "NOT " } else { "" };
            Some(format!("({c} {not}IN ({}))", items.join(", ")))
        }
        Expr::Between(b) => {
            let c = column(&b.expr)?;
            let not = if b.negated { "NOT " } else { "" };
            Some(format!(
                "({c} {not}BETWEEN {} AND {})",
                literal(&b.low)?,
                literal(&b.high)?
            ))
        }
        _ => None,
    }
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        other => out.push(other),
    }
}

fn text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

/// The participants the filters confine the query to (`participant_id = 'x'` or `IN
/// ('x', …)` among the top-level conjuncts; several are intersected), or `None` for all.
pub fn participants(filters: &[Expr]) -> Option<BTreeSet<String>> {
    let mut all = Vec::new();
    for f in filters {
        conjuncts(f, &mut all);
    }
    let mut out: Option<BTreeSet<String>> = None;
    for c in all {
        let set: Option<BTreeSet<String>> = match c {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (column(left), column(right)) {
                (Some("participant_id"), _) => text(right).map(|s| [s].into()),
                (_, Some("participant_id")) => text(left).map(|s| [s].into()),
                _ => None,
            },
            Expr::InList(l) if !l.negated && column(&l.expr) == Some("participant_id") => {
                l.list.iter().map(text).collect()
            }
            _ => None,
        };
        if let Some(s) = set {
            out = Some(match out {
                Some(o) => o.intersection(&s).cloned().collect(),
                None => s,
            });
        }
    }
    out
}

/// Bounds on `ts` from the top-level conjuncts, microseconds: rows can only have
/// `lo <= ts <= hi`.
pub fn time_range(filters: &[Expr]) -> (Option<i64>, Option<i64>) {
    let mut all = Vec::new();
    for f in filters {
        conjuncts(f, &mut all);
    }
    let (mut lo, mut hi): (Option<i64>, Option<i64>) = (None, None);
    let mut lower = |v: i64| lo = Some(lo.map_or(v, |l: i64| l.max(v)));
    let mut bounds = Vec::new();
    for c in all {
        match c {
            Expr::BinaryExpr(BinaryExpr { left, op: o, right }) => {
                let (o, v) = match (column(left), column(right), left.as_ref(), right.as_ref()) {
                    (Some("ts"), _, _, Expr::Literal(v, _)) => (*o, v),
                    (_, Some("ts"), Expr::Literal(v, _), _) => match o.swap() {
                        Some(s) => (s, v),
                        None => continue,
                    },
                    _ => continue,
                };
                if let Some(us) = micros(v) {
                    bounds.push((o, us));
                }
            }
            Expr::Between(b) if !b.negated && column(&b.expr) == Some("ts") => {
                if let (Expr::Literal(l, _), Expr::Literal(h, _)) =
                    (b.low.as_ref(), b.high.as_ref())
                {
                    if let (Some(l), Some(h)) = (micros(l), micros(h)) {
                        bounds.push((Operator::GtEq, l));
                        bounds.push((Operator::LtEq, h));
                    }
                }
            }
            _ => {}
        }
    }
    for (o, us) in bounds {
        match o {
            Operator::Gt | Operator::GtEq => lower(us),
            Operator::Lt | Operator::LtEq => hi = Some(hi.map_or(us, |h| h.min(us))),
            Operator::Eq => {
                lower(us);
                hi = Some(hi.map_or(us, |h| h.min(us)));
            }
            _ => {}
        }
    }
    (lo, hi)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts_lit_us(us: i64) -> Expr {
        Expr::Literal(
            ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into())),
            None,
        )
    }

    #[test]
    fn filters_become_sql_or_stay_with_the_engine() {
        let f = col("participant_id")
            .eq(lit("P'1"))
            .and(col("value").gt(lit(2.5)));
        assert_eq!(
            to_sql(&f).unwrap(),
            "((participant_id = 'P''1') AND (value > 2.5::float8))"
        );
        let ts = Expr::Literal(
            ScalarValue::TimestampMicrosecond(Some(1_500_000), Some("UTC".into())),
            None,
        );
        assert_eq!(
            to_sql(&col("ts").gt_eq(ts)).unwrap(),
            "(ts >= '1970-01-01T00:00:01.500000Z'::timestamptz)"
        );
        // The provenance columns (schema version 12), with the literal types the engine
        // narrows a comparison's literal to.
        let f = col("src_partition")
            .eq(lit(3i32))
            .and(col("utc_offset_min").gt_eq(lit(-210i16)))
            .and(col("src_offset").in_list(vec![lit(7i64), lit(9i64)], false))
            .and(col("received_at").lt(ts_lit_us(2_000_000)));
        assert_eq!(
            to_sql(&f).unwrap(),
            "((((src_partition = 3) AND (utc_offset_min >= -210)) AND (src_offset IN (7, 9))) \
             AND (received_at < '1970-01-01T00:00:02.000000Z'::timestamptz))"
        );
        assert!(
            to_sql(&col("nope").eq(lit(1))).is_none(),
            "unknown columns are not written"
        );
        assert!(
            to_sql(&datafusion::functions::expr_fn::upper(col("metric")).eq(lit("X"))).is_none()
        );
    }

    #[test]
    fn participants_and_time_bounds_come_from_top_level_conjuncts() {
        let us = |v| Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), None), None);
        let f = vec![
            col("participant_id").in_list(vec![lit("a"), lit("b")], false),
            col("ts").gt_eq(us(10)).and(col("ts").lt(us(20))),
        ];
        assert_eq!(
            participants(&f),
            Some(["a".to_string(), "b".to_string()].into())
        );
        assert_eq!(time_range(&f), (Some(10), Some(20)));
        let or = vec![col("participant_id")
            .eq(lit("a"))
            .or(col("value").gt(lit(1.0)))];
        assert_eq!(participants(&or), None, "an OR does not confine");
    }
}
