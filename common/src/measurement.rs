//! The measurement contract: wire messages (`schemas/measurement.schema.json`), their
//! validation, and the [`Reading`] rows they turn into.
//!
//! [`decode`] is the one gate every Kafka record passes. It enforces the JSON Schema plus the
//! rules JSON Schema cannot express (see `schemas/README.md`): the maximum message size and
//! the plausible timestamp window relative to the time of ingest. The schema tests in this
//! module check that [`decode`] and the JSON Schema agree on every example in
//! `schemas/examples/`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

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

/// Why a message was rejected. The [`code`](RejectReason::code) is stable: it is the
/// `reason` header of the dead-letter record and the label of the per-reason counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The message is larger than `validation.max_message_bytes`.
    Oversize,
    /// The message is not valid UTF-8.
    InvalidUtf8,
    /// The message is not well-formed JSON.
    InvalidJson,
    /// Well-formed JSON that breaks the schema: a missing, extra or wrongly typed field.
    Schema,
    /// An identifier or metric name breaks its pattern or length.
    InvalidId,
    /// A value is not a finite number.
    NonFiniteValue,
    /// A timestamp is not RFC 3339 with an offset.
    InvalidTs,
    /// A timestamp lies outside the plausible window.
    TsOutOfWindow,
}

impl RejectReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RejectReason; 8] = [
        Self::Oversize,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::Schema,
        Self::InvalidId,
        Self::NonFiniteValue,
        Self::InvalidTs,
        Self::TsOutOfWindow,
    ];

    /// Stable snake-case code, e.g. `invalid_json`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::Schema => "schema",
            Self::InvalidId => "invalid_id",
            Self::NonFiniteValue => "non_finite_value",
            Self::InvalidTs => "invalid_ts",
            Self::TsOutOfWindow => "ts_out_of_window",
        }
    }

    /// The reason whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// A rejected message: the reason and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// What exactly was wrong, for the operator reading the dead-letter topic.
    pub detail: String,
}

fn reject(reason: RejectReason, detail: impl fmt::Display) -> Rejection {
    Rejection {
        reason,
        detail: detail.to_string(),
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
    samples: Option<Vec<Sample<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample<'a> {
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

/// Parses an RFC 3339 timestamp with an explicit offset into UTC microseconds.
///
/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` is parsed by [`fast_ts`]; any
/// other text (and leap seconds) goes to chrono, which gives the same result or the error.
fn parse_ts(s: &str) -> Result<i64, Rejection> {
    if let Some(t) = fast_ts(s.as_bytes()) {
        return Ok(t);
    }
    parse_ts_chrono(s)
}

fn parse_ts_chrono(s: &str) -> Result<i64, Rejection> {
    // chrono accepts 'T', 't' or ' ' as the separator and requires seconds and an offset.
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| reject(RejectReason::InvalidTs, format_args!("ts {s:?}: {e}")))?;
    Ok(t.with_timezone(&Utc).timestamp_micros())
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|z|±HH:MM)` (RFC 3339 section 5.6, `T`, `t` or space as the
/// separator, as chrono accepts) to UTC microseconds, truncating below a microsecond as
/// chrono's `timestamp_micros` does. `None` for anything else, including second 60.
fn fast_ts(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        let frac = num(&b[start..i])?;
        micros = match digits {
            1..=6 => frac * 10i64.pow(u32::try_from(6 - digits).ok()?),
            _ => frac / 10i64.pow(u32::try_from(digits - 6).ok()?),
        };
    }
    let offset_secs = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
    // Low-Level Date Algorithms", days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
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
    /// The samples as (UTC microseconds since the Unix epoch, finite value): 1 for the reading
    /// form, 1 to [`MAX_BATCH_SAMPLES`] for the batch form, in message order.
    pub samples: Vec<(i64, f64)>,
}

impl Message<'_> {
    /// The message as owned rows, one per sample.
    pub fn readings(&self) -> Vec<Reading> {
        let own = |c: &Option<std::borrow::Cow<'_, str>>| c.as_deref().map(str::to_owned);
        self.samples
            .iter()
            .map(|&(ts_micros, value)| Reading {
                participant_id: self.participant_id.clone().into_owned(),
                metric: self.metric.clone().into_owned(),
                ts_micros,
                value,
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
        let ts_micros = parse_ts(&ts)?;
        if !(lo..=hi).contains(&ts_micros) {
            return Err(reject(
                RejectReason::TsOutOfWindow,
                format_args!(
                    "ts {ts} is outside the plausible window (max_age {:?}, max_future {:?})",
                    limits.max_age, limits.max_future
                ),
            ));
        }
        samples.push((ts_micros, value));
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The examples' reference "now": 2026-11-21T00:00:00Z.
    const EXAMPLES_NOW: i64 = 1_795_219_200_000_000;

    fn examples(kind: &str) -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/examples")
            .join(kind);
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        assert!(!v.is_empty(), "no examples in {}", dir.display());
        v
    }

    fn schema() -> jsonschema::Validator {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/measurement.schema.json"
        );
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    }

    #[test]
    fn fast_timestamp_parser_agrees_with_chrono() {
        let fixed = [
            "2026-11-21T00:00:00Z",
            "2026-11-21t23:59:59.999999999z",
            "2024-02-29T12:00:00.5+05:30",
            "2023-02-29T12:00:00Z",
            "2000-01-01 00:00:00.000001-00:00",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.9Z",
            "1900-03-01T00:00:00+23:59",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-06-30T23:59:60Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.1234567890Z",
            "+2026-01-01T00:00:00Z",
        ];
        let mut rng = rand::rng();
        let random = (0..20_000).map(|_| {
            use rand::Rng;
            let frac = match rng.random_range(0..4) {
                0 => String::new(),
                1 => format!(".{}", rng.random_range(0..10)),
                2 => format!(".{:06}", rng.random_range(0..1_000_000)),
                _ => format!(".{:09}", rng.random_range(0..1_000_000_000)),
            };
            let off = match rng.random_range(0..3) {
                0 => "Z".to_string(),
                _ => format!(
                    "{}{:02}:{:02}",
                    if rng.random() { '+' } else { '-' },
                    rng.random_range(0..24),
                    rng.random_range(0..60)
                ),
            };
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{off}",
                rng.random_range(1800..2200),
                rng.random_range(1..13),
                rng.random_range(1..32),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            )
        });
        for s in fixed.iter().map(|s| s.to_string()) {
            let chrono = parse_ts_chrono(&s).ok();
            if let Some(fast) = fast_ts(s.as_bytes()) {
                assert_eq!(Some(fast), chrono, "{s}");
            }
            assert_eq!(parse_ts(&s).ok(), chrono, "{s}");
        }
        // Random shapes without leap seconds: the fast path takes exactly what chrono takes.
        for s in random {
            assert_eq!(fast_ts(s.as_bytes()), parse_ts_chrono(&s).ok(), "{s}");
        }
        assert!(
            fast_ts(b"2026-11-21T00:00:00.123Z").is_some(),
            "the common shape is fast"
        );
    }

    #[test]
    fn valid_examples_pass_schema_and_decoder() {
        let v = schema();
        for (name, bytes) in examples("valid") {
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(v.is_valid(&json), "{name}: JSON Schema rejects it");
            let readings = decode(&bytes, &Limits::default(), EXAMPLES_NOW)
                .unwrap_or_else(|e| panic!("{name}: decoder rejects it: {e}"));
            assert!(!readings.is_empty());
        }
    }

    /// Each invalid example is named `<reason code>--<what>.json`; the decoder must give that
    /// reason, and the JSON Schema must reject it too unless the rule is one JSON Schema cannot
    /// express (the relative timestamp window).
    #[test]
    fn invalid_examples_fail_schema_and_decoder_with_their_reason() {
        let v = schema();
        let mut seen = std::collections::BTreeSet::new();
        for (name, bytes) in examples("invalid") {
            let code = name.split("--").next().unwrap();
            let want =
                RejectReason::from_code(code).unwrap_or_else(|| panic!("{name}: unknown reason"));
            seen.insert(want);
            let got = decode(&bytes, &Limits::default(), EXAMPLES_NOW).expect_err(&name);
            assert_eq!(got.reason, want, "{name}: {got}");
            if want != RejectReason::TsOutOfWindow {
                let schema_ok = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map(|j| v.is_valid(&j))
                    .unwrap_or(false);
                assert!(!schema_ok, "{name}: JSON Schema accepts it");
            }
        }
        assert!(seen.len() >= 7, "examples cover only {seen:?}");
    }

    #[test]
    fn oversize_is_checked_before_parsing() {
        let limits = Limits {
            max_message_bytes: 16,
            ..Limits::default()
        };
        let e = decode(br#"{"participant_id":"P1"}"#, &limits, EXAMPLES_NOW).unwrap_err();
        assert_eq!(e.reason, RejectReason::Oversize);
    }

    #[test]
    fn batch_expands_to_one_reading_per_sample_in_utc_micros() {
        let msg = br#"{"participant_id":"P1","metric":"ppg","unit":"mV","samples":[
            {"ts":"2026-11-20T01:00:00.000001+01:00","value":1.5},{"ts":"2026-11-20T00:00:00.5Z","value":-2}]}"#;
        let r = decode(msg, &Limits::default(), EXAMPLES_NOW).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].ts_micros, 1_795_132_800_000_001);
        assert_eq!(r[1].ts_micros, 1_795_132_800_500_000);
        assert_eq!(r[1].value, -2.0);
        assert_eq!(r[0].unit.as_deref(), Some("mV"));
        assert!(r
            .iter()
            .all(|x| x.participant_id == "P1" && x.metric == "ppg"));
    }

    #[test]
    fn batch_over_the_sample_limit_is_rejected() {
        let sample = r#"{"ts":"2026-11-20T00:00:00Z","value":1}"#;
        let body = vec![sample; MAX_BATCH_SAMPLES + 1].join(",");
        let msg = format!(r#"{{"participant_id":"P1","metric":"ppg","samples":[{body}]}}"#);
        let e = decode(msg.as_bytes(), &Limits::default(), EXAMPLES_NOW).unwrap_err();
        assert_eq!(e.reason, RejectReason::Schema);
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(r.code()), Some(r));
        }
    }
}
