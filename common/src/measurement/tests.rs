#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::ts::{fast_ts, parse_ts_chrono};
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
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
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

#[test]
fn the_written_utc_offset_is_kept_in_minutes() {
    let cases = [
        (
            "2026-06-01T23:30:00+05:45",
            Some(345),
            1_780_335_900_000_000,
        ),
        (
            "2026-06-01T23:30:00-03:30",
            Some(-210),
            1_780_369_200_000_000,
        ),
        (
            "2026-06-01T23:30:00+14:00",
            Some(840),
            1_780_306_200_000_000,
        ),
        (
            "2026-06-01T23:30:00-12:00",
            Some(-720),
            1_780_399_800_000_000,
        ),
        ("2026-06-01T23:30:00Z", Some(0), 1_780_356_600_000_000),
        ("2026-06-01T23:30:00+00:00", Some(0), 1_780_356_600_000_000),
        // RFC 3339 section 4.3: UTC known, local offset unknown.
        ("2026-06-01T23:30:00-00:00", None, 1_780_356_600_000_000),
    ];
    for (s, offset, micros) in cases {
        let fast = fast_ts(s.as_bytes()).unwrap();
        assert_eq!(fast, parse_ts_chrono(s).unwrap(), "{s}");
        assert_eq!((fast.offset_min, fast.micros), (offset, micros), "{s}");
    }
    let body = br#"{"participant_id":"P1","metric":"hr","samples":[{"ts":"2026-06-01T23:30:00+05:45","value":1},{"ts":"2026-06-01T18:00:00Z","value":2}]}"#;
    let m = decode_message(body, &Limits::default(), 1_780_400_000_000_000).unwrap();
    let got: Vec<Option<i16>> = m.samples.iter().map(|s| s.utc_offset_min).collect();
    assert_eq!(got, [Some(345), Some(0)]);
    assert_eq!(m.samples[0].ts_micros, m.samples[1].ts_micros - 900_000_000);
}
