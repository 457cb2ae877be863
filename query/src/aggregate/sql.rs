//! DataFusion physical expressions written as PostgreSQL, over one shard's `measurements`.
//!
//! An expression above a shard's scan refers to columns by position in its input; between
//! the aggregate and the scan sit projections, filters and repartitions ([`Branch`]). A
//! column is followed down that chain to the scan's column (one of
//! [`vitalsink_common::columns::COLUMNS`], the only names written into SQL) or to the
//! projected expression that defines it.
//!
//! Only forms whose PostgreSQL meaning is DataFusion's are written; anything else returns
//! `None`, and the aggregate stays in the engine. Notes on the forms, from the PostgreSQL 17
//! manual ("Date/Time Functions and Operators") and DataFusion 55's functions:
//! - `date_trunc(unit, ts)`: DataFusion truncates in the column's time zone (`UTC`), so the
//!   shard gets PostgreSQL's three-argument form `date_trunc(unit, ts, 'UTC')`, which does
//!   not depend on the session's `TimeZone`; units of a fixed length (second to week) get
//!   TimescaleDB's `time_bucket`, which buckets a `timestamptz` in UTC (TimescaleDB's
//!   `sql/time_bucket.sql`: "bucketing of timestamptz happens at UTC time"; its docs: buckets
//!   shorter than a month start from 2000-01-03, a Monday, at midnight UTC), two to three
//!   times faster.
//! - `date_bin(stride, ts[, origin])`: PostgreSQL needs the origin (DataFusion's default is
//!   1970-01-01T00:00:00Z) and refuses strides of months; those stay in the engine.
//! - `time_bucket(stride, ts)` ([`crate::engine::functions`]) is TimescaleDB's own.
//! - `CAST(ts + duration AS DATE)` (the participant's local day, README "Local time"): `ts`
//!   is an instant in UTC, so the date is `(ts AT TIME ZONE 'UTC' + interval)::date` alike.
//! - Text compares byte-wise in DataFusion; in PostgreSQL under the database's collation, so
//!   order comparisons of text are written with `COLLATE "C"` (byte order for UTF-8).

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NegativeExpr,
    NotExpr, TryCastExpr,
};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use std::sync::Arc;

use crate::shard_scan::ShardScanExec;

/// Whether `plan` may sit between an aggregate and a shard's scan: it passes rows through
/// (filtered or projected) without combining them.
pub fn is_step(plan: &dyn ExecutionPlan) -> bool {
    plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
}

/// The nodes from an aggregate's input down to one shard's scan (a union between them is
/// positional and left out): `steps[0]` is the aggregate's input.
pub struct Branch<'a> {
    /// Top first.
    pub steps: Vec<&'a Arc<dyn ExecutionPlan>>,
    /// The shard's scan.
    pub scan: &'a ShardScanExec,
}

impl Branch<'_> {
    /// The schema expressions at `level` refer to (level 0: the aggregate's input).
    fn schema(&self, level: usize) -> SchemaRef {
        match self.steps.get(level) {
            Some(s) => s.schema(),
            None => ExecutionPlan::schema(self.scan),
        }
    }

    /// The data type of `e` at `level`.
    pub fn data_type(&self, e: &Arc<dyn PhysicalExpr>, level: usize) -> Option<DataType> {
        e.data_type(&self.schema(level)).ok()
    }

    /// The `WHERE` terms of every filter of the branch, or `None` when one cannot be written.
    pub fn filters(&self) -> Option<Vec<String>> {
        let mut terms = Vec::new();
        for (level, step) in self.steps.iter().enumerate() {
            if let Some(f) = step.downcast_ref::<FilterExec>() {
                terms.push(self.sql(f.predicate(), level + 1)?);
            }
        }
        Some(terms)
    }

    /// Column `i` at `level` as SQL.
    fn column(&self, i: usize, level: usize) -> Option<String> {
        let Some(step) = self.steps.get(level) else {
            let schema = ExecutionPlan::schema(self.scan);
            let name = schema.fields().get(i)?.name();
            return vitalsink_common::columns::COLUMNS
                .iter()
                .find(|c| *c == name)
                .map(|c| (*c).to_string());
        };
        if let Some(p) = step.downcast_ref::<ProjectionExec>() {
            return self.sql(&p.expr().get(i)?.expr, level + 1);
        }
        if let Some(f) = step.downcast_ref::<FilterExec>() {
            let j = match f.projection() {
                Some(p) => *p.get(i)?,
                None => i,
            };
            return self.column(j, level + 1);
        }
        self.column(i, level + 1)
    }

    /// `e`, an expression over the schema at `level`, as PostgreSQL (parenthesised), or
    /// `None` when it has no form here meaning the same.
    pub fn sql(&self, e: &Arc<dyn PhysicalExpr>, level: usize) -> Option<String> {
        if let Some(c) = e.downcast_ref::<Column>() {
            return self.column(c.index(), level);
        }
        if let Some(l) = e.downcast_ref::<Literal>() {
            return literal(l.value());
        }
        if let Some(b) = e.downcast_ref::<BinaryExpr>() {
            return self.binary(b, level);
        }
        if let Some(c) = e.downcast_ref::<CastExpr>() {
            return self.cast(c.expr(), c.cast_type(), level);
        }
        if let Some(c) = e.downcast_ref::<TryCastExpr>() {
            return self.cast(c.expr(), c.cast_type(), level);
        }
        if let Some(n) = e.downcast_ref::<IsNullExpr>() {
            return Some(format!("({} IS NULL)", self.sql(n.arg(), level)?));
        }
        if let Some(n) = e.downcast_ref::<IsNotNullExpr>() {
            return Some(format!("({} IS NOT NULL)", self.sql(n.arg(), level)?));
        }
        if let Some(n) = e.downcast_ref::<NotExpr>() {
            return Some(format!("(NOT {})", self.sql(n.arg(), level)?));
        }
        if let Some(n) = e.downcast_ref::<NegativeExpr>() {
            return Some(format!("(- {})", self.sql(n.arg(), level)?));
        }
        if let Some(i) = e.downcast_ref::<InListExpr>() {
            let list = i
                .list()
                .iter()
                .map(|x| self.sql(x, level))
                .collect::<Option<Vec<_>>>()?;
            return Some(format!(
                "({} {}IN ({}))",
                self.sql(i.expr(), level)?,
                if i.negated() { "NOT " } else { "" },
                list.join(", ")
            ));
        }
        if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>() {
            return self.function(f, level);
        }
        None
    }

    fn binary(&self, b: &BinaryExpr, level: usize) -> Option<String> {
        let lt = self.data_type(b.left(), level)?;
        let rt = self.data_type(b.right(), level)?;
        let (l, r) = (self.sql(b.left(), level)?, self.sql(b.right(), level)?);
        let numeric = |t: &DataType| t.is_integer() || *t == DataType::Float64;
        let op = match b.op() {
            Operator::And => "AND",
            Operator::Or => "OR",
            o @ (Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq) => {
                let sym = match o {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    _ => ">=",
                };
                // Equality is the same under every deterministic collation (and keeps the
                // shard's index usable); order is byte order only under "C".
                let order = !matches!(o, Operator::Eq | Operator::NotEq);
                if order && is_text(&lt) && is_text(&rt) {
                    return Some(format!("({l} COLLATE \"C\" {sym} {r})"));
                }
                sym
            }
            Operator::Plus | Operator::Minus => {
                let time_shift = (is_utc_time(&lt) || is_naive_micros(&lt))
                    && matches!(rt, DataType::Duration(_) | DataType::Interval(_));
                if !(time_shift || (numeric(&lt) && numeric(&rt))) {
                    return None;
                }
                if *b.op() == Operator::Plus {
                    "+"
                } else {
                    "-"
                }
            }
            Operator::Multiply if numeric(&lt) && numeric(&rt) => "*",
            Operator::StringConcat if is_text(&lt) && is_text(&rt) => "||",
            _ => return None,
        };
        Some(format!("({l} {op} {r})"))
    }

    fn cast(&self, inner: &Arc<dyn PhysicalExpr>, to: &DataType, level: usize) -> Option<String> {
        let from = self.data_type(inner, level)?;
        let x = self.sql(inner, level)?;
        if &from == to {
            return Some(x);
        }
        Some(match (&from, to) {
            (f, DataType::Int64) if f.is_integer() => format!("({x})::int8"),
            (DataType::Int8 | DataType::Int16, DataType::Int32) => format!("({x})::int4"),
            (f, DataType::Float64) if f.is_integer() => format!("({x})::float8"),
            (f, DataType::Duration(TimeUnit::Second)) if f.is_integer() => {
                format!("make_interval(secs => ({x})::float8)")
            }
            (DataType::Duration(_), DataType::Duration(TimeUnit::Microsecond)) => x,
            // PostgreSQL's timestamps are microseconds: nanoseconds add nothing.
            (f, t) if is_utc_time(f) && is_utc_time(t) => x,
            // An instant in UTC to its wall-clock time there (arrow's cast to no time zone).
            (f, t) if is_utc_time(f) && is_naive_micros(t) => format!("({x} AT TIME ZONE 'UTC')"),
            (f, DataType::Date32) if is_naive_micros(f) => format!("({x})::date"),
            // Arrow writes a date as ISO 8601, `YYYY-MM-DD` (whatever the session's DateStyle).
            (f, t) if is_text(f) && is_text(t) => x,
            (DataType::Date32, t) if is_text(t) => format!("to_char({x}, 'YYYY-MM-DD')"),
            (f, t) if f.is_integer() && is_text(t) => format!("({x})::text"),
            (f, DataType::Date32) if is_utc_time(f) => {
                format!("(({x}) AT TIME ZONE 'UTC')::date")
            }
            _ => return None,
        })
    }

    fn function(&self, f: &ScalarFunctionExpr, level: usize) -> Option<String> {
        let args = f.args();
        let ts = |i: usize| -> Option<String> {
            let a = args.get(i)?;
            is_utc_time(&self.data_type(a, level)?)
                .then(|| self.sql(a, level))
                .flatten()
        };
        match (f.name(), args.len()) {
            ("date_trunc", 2) => {
                let unit = string_literal(&args[0])?.to_ascii_lowercase();
                const UNITS: [&str; 10] = [
                    "microsecond",
                    "millisecond",
                    "second",
                    "minute",
                    "hour",
                    "day",
                    "week",
                    "month",
                    "quarter",
                    "year",
                ];
                UNITS.contains(&unit.as_str()).then_some(())?;
                let a = args.get(1)?;
                let naive = is_naive_micros(&self.data_type(a, level)?);
                let x = if naive { self.sql(a, level)? } else { ts(1)? };
                // Units of a fixed length: TimescaleDB's `time_bucket`, the same buckets
                // (its origin, 2000-01-03 00:00 UTC, is a Monday's midnight, so a week is
                // ISO's, from Monday) by integer arithmetic: 0.27 s against 0.6–0.7 s for
                // `date_trunc('day', ts, 'UTC')` over a shard's 2.5 M rows (bench data).
                let fixed = match unit.as_str() {
                    "second" | "minute" | "hour" | "day" => Some(format!("1 {unit}")),
                    "week" => Some("7 days".to_string()),
                    _ => None,
                };
                Some(match (fixed, naive) {
                    (Some(width), _) => format!("time_bucket('{width}'::interval, {x})"),
                    (None, true) => format!("date_trunc('{unit}', {x})"),
                    (None, false) => format!("date_trunc('{unit}', {x}, 'UTC')"),
                })
            }
            ("date_bin", 2 | 3) => {
                let stride = sub_month_interval(&args[0])?;
                let origin = match args.get(2) {
                    Some(o) => {
                        let (Some(ScalarValue::TimestampMicrosecond(Some(_), _))
                        | Some(ScalarValue::TimestampNanosecond(Some(_), _))) = literal_value(o)
                        else {
                            return None;
                        };
                        self.sql(o, level)?
                    }
                    None => "'1970-01-01T00:00:00Z'::timestamptz".to_string(),
                };
                Some(format!("date_bin({stride}, {}, {origin})", ts(1)?))
            }
            ("time_bucket", 2) => {
                let stride = sub_month_interval(&args[0])?;
                Some(format!("time_bucket({stride}, {})", ts(1)?))
            }
            _ => None,
        }
    }
}

/// Whether `t` is text (PostgreSQL's `text`): Arrow's `Utf8`, `Utf8View` or `LargeUtf8`.
pub fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// Whether `t` is a timestamp without time zone in microseconds (a local wall-clock time,
/// `arrow_cast(…, 'Timestamp(Microsecond, None)')`), PostgreSQL's `timestamp`.
pub fn is_naive_micros(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(TimeUnit::Microsecond, None))
}

/// Whether `t` is a timestamp in UTC: microseconds (the table's `ts` and `received_at`) or
/// nanoseconds (what `date_bin` casts them to).
pub fn is_utc_time(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, Some(tz)) if tz.as_ref() == "UTC" || tz.as_ref() == "+00:00")
}

fn literal_value(e: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    e.downcast_ref::<Literal>().map(Literal::value)
}

fn string_literal(e: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    match literal_value(e)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// A positive stride of no months (PostgreSQL's `date_bin` refuses months), whole
/// microseconds, as an interval literal.
fn sub_month_interval(e: &Arc<dyn PhysicalExpr>) -> Option<String> {
    let (days, nanos) = match literal_value(e)? {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => (v.days, v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => (v.days, i64::from(v.milliseconds) * 1_000_000),
        _ => return None,
    };
    (nanos % 1000 == 0 && (days > 0 || nanos > 0) && days >= 0 && nanos >= 0).then_some(())?;
    Some(format!(
        "'{days} days {} microseconds'::interval",
        nanos / 1000
    ))
}

/// A literal as PostgreSQL, typed so that the shard reads it as the engine does.
fn literal(v: &ScalarValue) -> Option<String> {
    Some(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => format!("'{}'", s.replace('\'', "''")),
        ScalarValue::Float64(Some(f)) if f.is_finite() => format!("({f:?})::float8"),
        ScalarValue::Int64(Some(i)) => format!("({i})::int8"),
        ScalarValue::Int32(Some(i)) => format!("({i})::int4"),
        ScalarValue::Int16(Some(i)) => format!("({i})::int2"),
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::Date32(Some(d)) => {
            let day = chrono::DateTime::from_timestamp(i64::from(*d) * 86_400, 0)?;
            format!("'{}'::date", day.format("%Y-%m-%d"))
        }
        ScalarValue::DurationSecond(Some(s)) => format!("make_interval(secs => {s})"),
        ScalarValue::DurationMicrosecond(Some(us)) => {
            format!("'{us} microseconds'::interval")
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.nanoseconds % 1000 == 0 => format!(
            "'{} months {} days {} microseconds'::interval",
            v.months,
            v.days,
            v.nanoseconds / 1000
        ),
        ScalarValue::TimestampMicrosecond(Some(us), Some(_))
        | ScalarValue::TimestampNanosecond(Some(us), Some(_)) => {
            let us = match v {
                ScalarValue::TimestampNanosecond(..) => {
                    (us % 1000 == 0).then_some(())?;
                    us / 1000
                }
                _ => *us,
            };
            let t = chrono::DateTime::from_timestamp_micros(us)?;
            format!(
                "'{}'::timestamptz",
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        }
        _ => return None,
    })
}
