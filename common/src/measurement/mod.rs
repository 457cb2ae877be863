//! The measurement contract: wire messages (`schemas/measurement.schema.json`), their
//! validation, and the [`Reading`] rows they turn into.
//!
//! [`decode`] is the one gate every Kafka record passes. It enforces the JSON Schema plus the
//! rules JSON Schema cannot express (see `schemas/README.md`): the maximum message size and
//! the plausible timestamp window relative to the time of ingest. The schema tests in this
//! module check that [`decode`] and the JSON Schema agree on every example in
//! `schemas/examples/`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

mod reject;
mod ts;

pub(crate) use reject::reject;
pub use reject::{RejectReason, Rejection};
use ts::parse_ts;
pub use ts::Instant;

/// Largest number of samples in one batch message (the schema's `maxItems`).
pub const MAX_BATCH_SAMPLES: usize = 10_000;

/// Version of the wire contract, `schemas/measurement.schema.json`.
pub const CONTRACT_VERSION: u32 = 1;

/// One stored measurement: one row of the `measurements` hypertable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Participant identifier (schema `$defs/id`).
    pub participant_id: String,
    /// Metric name (schema `$defs/metric`).
    pub metric: String,
    /// Timestamp in microseconds since the Unix epoch, UTC.
    pub ts_micros: i64,
    /// The finite measured value.
    pub value: f64,
    /// The UTC offset written with `ts`, minutes east of UTC; `None` for `-00:00` (unknown).
    pub utc_offset_min: Option<i16>,
    /// Unit of the value, if given.
    pub unit: Option<String>,
    /// Device identifier, if given.
    pub device_id: Option<String>,
    /// Study identifier, if given.
    pub study_id: Option<String>,
}

impl Reading {
    /// Approximate heap plus inline size of this reading in bytes, used for batch and memory
    /// accounting (the string lengths plus the struct itself).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.participant_id.len()
            + self.metric.len()
            + self.unit.as_ref().map_or(0, String::len)
            + self.device_id.as_ref().map_or(0, String::len)
            + self.study_id.as_ref().map_or(0, String::len)
    }
}

/// Rules applied by [`decode`] beyond the JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message, bytes.
    pub max_message_bytes: usize,
    /// Oldest accepted timestamp, as an age relative to the time of ingest.
    pub max_age: Duration,
    /// Furthest accepted timestamp in the future, relative to the time of ingest (clock skew).
    pub max_future: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1_048_576,
            max_age: Duration::from_secs(20 * 365 * 86_400),
            max_future: Duration::from_secs(300),
        }
    }
}

/// The wire message, either form. Optional fields are all listed so that the two forms are
/// told apart with one pass and a precise reason (serde's untagged enums lose the reason).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    participant_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    metric: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<std::borrow::Cow<'a, str>>,
    value: Option<f64>,
    #[serde(borrow)]
    unit: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    device_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    study_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    samples: Option<Vec<WireSample<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSample<'a> {
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    value: f64,
}

/// Whether `s` matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (schema `$defs/id`).
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Whether `s` matches `^[a-z][a-z0-9_.]{0,63}$` (schema `$defs/metric`).
pub fn is_valid_metric(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.'))
}

fn is_valid_unit(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

fn serde_reason(e: &serde_json::Error) -> RejectReason {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => RejectReason::Schema,
        // serde_json refuses numbers that overflow f64 ("number out of range").
        Category::Syntax if e.to_string().contains("number out of range") => {
            RejectReason::NonFiniteValue
        }
        _ => RejectReason::InvalidJson,
    }
}

/// One validated wire message, borrowing its strings from the record value: the shape the
/// ingest worker encodes straight into `COPY … BINARY` tuples without one allocation per
/// reading. [`Message::readings`] gives owned [`Reading`] rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// Participant identifier (schema `$defs/id`).
    pub participant_id: std::borrow::Cow<'a, str>,
    /// Metric name (schema `$defs/metric`).
    pub metric: std::borrow::Cow<'a, str>,
    /// Unit, if given.
    pub unit: Option<std::borrow::Cow<'a, str>>,
    /// Device identifier, if given.
    pub device_id: Option<std::borrow::Cow<'a, str>>,
    /// Study identifier, if given.
    pub study_id: Option<std::borrow::Cow<'a, str>>,
    /// The samples: 1 for the reading form, 1 to [`MAX_BATCH_SAMPLES`] for the batch form, in
    /// message order.
    pub samples: Vec<Sample>,
}

/// One sample of a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// UTC microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The finite value.
    pub value: f64,
    /// The UTC offset written with the timestamp, minutes east of UTC; `None`: unknown.
    pub utc_offset_min: Option<i16>,
}

impl Sample {
    /// The sample's place in the reading identity besides its record's participant, device
    /// and metric: the instant and the value's bits (schemas/README.md, "Identity").
    ///
    /// `-0.0` and `0.0` are one value here, as they are to PostgreSQL's `float8` equality in
    /// the unique index (adding `0.0` turns `-0.0` into `0.0` in IEEE 754 round-to-nearest).
    pub fn identity(&self) -> (i64, u64) {
        (self.ts_micros, (self.value + 0.0).to_bits())
    }
}

impl Message<'_> {
    /// The message as owned rows, one per sample.
    pub fn readings(&self) -> Vec<Reading> {
        let own = |c: &Option<std::borrow::Cow<'_, str>>| c.as_deref().map(str::to_owned);
        self.samples
            .iter()
            .map(|s| Reading {
                participant_id: self.participant_id.clone().into_owned(),
                metric: self.metric.clone().into_owned(),
                ts_micros: s.ts_micros,
                value: s.value,
                utc_offset_min: s.utc_offset_min,
                unit: own(&self.unit),
                device_id: own(&self.device_id),
                study_id: own(&self.study_id),
            })
            .collect()
    }
}

/// Validates one Kafka record value and returns its readings (1 for the reading form, 1 to
/// [`MAX_BATCH_SAMPLES`] for the batch form). Same rules as [`decode_message`].
///
/// # Errors
/// As [`decode_message`].
pub fn decode(bytes: &[u8], limits: &Limits, now_micros: i64) -> Result<Vec<Reading>, Rejection> {
    decode_message(bytes, limits, now_micros).map(|m| m.readings())
}

/// Validates one Kafka record value and returns it as a [`Message`] borrowing from `bytes`.
///
/// `now_micros` is the time of ingest in UTC microseconds; the plausible window is
/// `[now - limits.max_age, now + limits.max_future]`.
///
/// # Errors
/// A [`Rejection`] naming the first rule the message breaks; the checks run in the order of
/// [`RejectReason::ALL`] (size, UTF-8, JSON, schema, ids, values, timestamps).
pub fn decode_message<'a>(
    bytes: &'a [u8],
    limits: &Limits,
    now_micros: i64,
) -> Result<Message<'a>, Rejection> {
    if bytes.len() > limits.max_message_bytes {
        return Err(reject(
            RejectReason::Oversize,
            format_args!("{} bytes > limit {}", bytes.len(), limits.max_message_bytes),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| reject(RejectReason::InvalidUtf8, e))?;
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| reject(serde_reason(&e), e))?;

    let missing = |f: &str| reject(RejectReason::Schema, format_args!("missing field `{f}`"));
    let participant_id = wire
        .participant_id
        .ok_or_else(|| missing("participant_id"))?;
    let metric = wire.metric.ok_or_else(|| missing("metric"))?;
    let raw: Vec<(std::borrow::Cow<'_, str>, f64)> = match (wire.samples, wire.ts, wire.value) {
        (Some(samples), None, None) => {
            if samples.is_empty() || samples.len() > MAX_BATCH_SAMPLES {
                return Err(reject(
                    RejectReason::Schema,
                    format_args!(
                        "batch has {} samples, 1..={MAX_BATCH_SAMPLES} allowed",
                        samples.len()
                    ),
                ));
            }
            samples.into_iter().map(|s| (s.ts, s.value)).collect()
        }
        (Some(_), _, _) => {
            return Err(reject(
                RejectReason::Schema,
                "`samples` cannot be combined with `ts`/`value`",
            ))
        }
        (None, Some(ts), Some(value)) => vec![(ts, value)],
        (None, None, _) => return Err(missing("ts")),
        (None, Some(_), None) => return Err(missing("value")),
    };

    if !is_valid_id(&participant_id) {
        return Err(reject(
            RejectReason::InvalidId,
            format_args!(
                "participant_id {participant_id:?} breaks ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"
            ),
        ));
    }
    if !is_valid_metric(&metric) {
        return Err(reject(
            RejectReason::InvalidId,
            format_args!("metric {metric:?} breaks ^[a-z][a-z0-9_.]{{0,63}}$"),
        ));
    }
    for (name, v) in [("device_id", &wire.device_id), ("study_id", &wire.study_id)] {
        if let Some(v) = v.as_deref().filter(|v| !is_valid_id(v)) {
            return Err(reject(
                RejectReason::InvalidId,
                format_args!("{name} {v:?} breaks its pattern"),
            ));
        }
    }
    if let Some(u) = wire.unit.as_deref().filter(|u| !is_valid_unit(u)) {
        return Err(reject(
            RejectReason::InvalidId,
            format_args!("unit {u:?} breaks its pattern"),
        ));
    }

    let lo =
        now_micros.saturating_sub(i64::try_from(limits.max_age.as_micros()).unwrap_or(i64::MAX));
    let hi =
        now_micros.saturating_add(i64::try_from(limits.max_future.as_micros()).unwrap_or(i64::MAX));
    let mut samples = Vec::with_capacity(raw.len());
    for (ts, value) in raw {
        if !value.is_finite() {
            return Err(reject(
                RejectReason::NonFiniteValue,
                format_args!("value {value}"),
            ));
        }
        let Instant {
            micros: ts_micros,
            offset_min,
        } = parse_ts(&ts)?;
        if !(lo..=hi).contains(&ts_micros) {
            return Err(reject(
                RejectReason::TsOutOfWindow,
                format_args!(
                    "ts {ts} is outside the plausible window (max_age {:?}, max_future {:?})",
                    limits.max_age, limits.max_future
                ),
            ));
        }
        samples.push(Sample {
            ts_micros,
            value,
            utc_offset_min: offset_min,
        });
    }
    Ok(Message {
        participant_id,
        metric,
        unit: wire.unit,
        device_id: wire.device_id,
        study_id: wire.study_id,
        samples,
    })
}

#[cfg(test)]
mod tests;
