//! SQL functions the engine adds to DataFusion's: `time_bucket(stride, ts)`, TimescaleDB's
//! bucketing function, so that a query written for TimescaleDB runs here and gives the same
//! buckets (and is computed on the shards by TimescaleDB itself, [`crate::aggregate`]).
//!
//! TimescaleDB's `time_bucket(bucket_width, ts)` on `timestamptz` aligns buckets of less
//! than a month to the origin 2000-01-03 00:00:00 UTC, a Monday, so weekly buckets start on
//! Mondays (TimescaleDB API reference, "time_bucket()", argument `origin`). That is
//! DataFusion's `date_bin(stride, ts, origin)` with that origin. Strides of months (aligned
//! to 2000-01-01 by TimescaleDB) are refused with an error saying to use `date_trunc`.

use arrow::datatypes::{DataType, Field};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::scalar::ScalarValue;
use std::sync::Arc;

/// TimescaleDB's default origin for `timestamptz` buckets: 2000-01-03T00:00:00Z, in ns.
pub const TIME_BUCKET_ORIGIN_NS: i64 = 946_857_600_000_000_000;

/// `time_bucket(stride, ts)` (see the module doc).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    /// The function, typed as `date_bin`.
    pub fn new() -> Self {
        Self {
            signature: datafusion::functions::datetime::date_bin()
                .signature()
                .clone(),
        }
    }
}

impl Default for TimeBucket {
    fn default() -> Self {
        Self::new()
    }
}

/// The engine's own functions, to register on every session.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(TimeBucket::new()))]
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        datafusion::functions::datetime::date_bin()
            .inner()
            .return_type(arg_types)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 2 {
            return Err(DataFusionError::Plan(
                "time_bucket takes two arguments here: (stride, ts)".into(),
            ));
        }
        if let ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) = &args.args[0] {
            if v.months != 0 {
                return Err(DataFusionError::Plan(
                    "time_bucket with a stride of months is not supported: use date_trunc('month', ts)"
                        .into(),
                ));
            }
        }
        let tz = match args.arg_fields[1].data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let origin = ScalarValue::TimestampNanosecond(Some(TIME_BUCKET_ORIGIN_NS), tz.clone());
        args.arg_fields
            .push(Arc::new(Field::new("origin", origin.data_type(), false)));
        args.args.push(ColumnarValue::Scalar(origin));
        datafusion::functions::datetime::date_bin().invoke_with_args(args)
    }
}
