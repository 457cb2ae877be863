//! Tests of the tuple encoding: exact lengths and bytes, occurrences of repeated readings,
//! and texts too long for the stack frame.

use super::*;
use bytes::BytesMut;
use vitalsink_common::measurement::{decode_message, Limits, Reading, Sample};

const SRC: Source<'static> = Source {
    topic: "m",
    partition: 3,
    offset: 7,
    received_at_micros: Some(PG_EPOCH_OFFSET_MICROS + 1_000),
    received_at_type: Some(0),
};

#[test]
fn message_len_is_exact_and_tuples_match_readings() {
    let body = br#"{"participant_id":"P1","metric":"hr","unit":"bpm","samples":[{"ts":"2026-01-01T00:00:00Z","value":60},{"ts":"2026-01-01T00:00:01.5-00:00","value":61.5}]}"#;
    let now = 1_795_219_200_000_000;
    let msg = decode_message(body, &Limits::default(), now).unwrap();
    let mut a = BytesMut::new();
    encode_message(&mut a, &msg, &SRC);
    assert_eq!(a.len(), message_len(&msg, &SRC));
    let mut b = BytesMut::new();
    for r in msg.readings() {
        encode_reading(&mut b, &r, &SRC);
    }
    assert_eq!(a, b);
    // First tuple: 14 fields, "P1", "hr", then 2026-01-01T00:00:00Z as PostgreSQL µs.
    assert_eq!(&a[..2], &14i16.to_be_bytes());
    assert_eq!(&a[2..8], b"\0\0\0\x02P1");
    assert_eq!(&a[8..14], b"\0\0\0\x02hr");
    let pg_micros = 1_767_225_600_000_000i64 - PG_EPOCH_OFFSET_MICROS;
    assert_eq!(&a[18..26], &pg_micros.to_be_bytes());
    assert_eq!(&a[30..38], &60f64.to_be_bytes());
    assert_eq!(&a[38..45], b"\0\0\0\x03bpm");
    assert_eq!(&a[45..53], b"\xff\xff\xff\xff\xff\xff\xff\xff", "two NULLs");
    assert_eq!(&a[53..59], b"\0\0\0\x02\0\0", "offset Z = 0 min");
    assert_eq!(&a[59..65], b"\0\0\0\x02\0\0", "occurrence 0");
    assert_eq!(&a[65..77], b"\0\0\0\x08\0\0\0\0\0\0\x03\xe8", "received_at");
    assert_eq!(&a[77..83], b"\0\0\0\x02\0\0", "CreateTime");
    assert_eq!(&a[83..88], b"\0\0\0\x01m");
    assert_eq!(&a[88..96], b"\0\0\0\x04\0\0\0\x03");
    assert_eq!(&a[96..108], b"\0\0\0\x08\0\0\0\0\0\0\0\x07");
    // The second tuple's offset was written -00:00: unknown, NULL.
    assert_eq!(&a[108 + 53..108 + 57], b"\xff\xff\xff\xff");
    assert_eq!(a.len(), 108 + 106);
}

#[test]
fn repeated_readings_of_one_record_count_their_occurrence() {
    let s = |ts: i64, value: f64| Sample {
        ts_micros: ts,
        value,
        utc_offset_min: None,
    };
    assert_eq!(occurrences(&[s(1, 1.0), s(2, 1.0), s(3, 1.0)]), None);
    assert_eq!(occurrences(&[s(1, 1.0), s(1, 2.0), s(0, 1.0)]), None);
    assert_eq!(occurrences(&[s(1, 0.0), s(1, -0.0)]), Some(vec![0, 1]));
    assert_eq!(
        occurrences(&[s(1, 1.0), s(1, 1.0), s(1, 2.0), s(1, 1.0)]),
        Some(vec![0, 1, 0, 2])
    );
}

#[test]
fn text_longer_than_the_frame_goes_to_the_heap() {
    let r = Reading {
        participant_id: "p".repeat(300),
        metric: "hr".into(),
        ts_micros: PG_EPOCH_OFFSET_MICROS + 5,
        value: 1.5,
        utc_offset_min: Some(-720),
        unit: None,
        device_id: Some("d".repeat(300)),
        study_id: Some("s".into()),
    };
    let mut buf = BytesMut::new();
    encode_reading(&mut buf, &r, &SRC);
    let mut want = 14i16.to_be_bytes().to_vec();
    want.extend(300i32.to_be_bytes());
    want.extend("p".repeat(300).bytes());
    want.extend(2i32.to_be_bytes());
    want.extend(*b"hr");
    want.extend(8i32.to_be_bytes());
    want.extend(5i64.to_be_bytes());
    want.extend(8i32.to_be_bytes());
    want.extend(1.5f64.to_bits().to_be_bytes());
    want.extend((-1i32).to_be_bytes());
    want.extend(300i32.to_be_bytes());
    want.extend("d".repeat(300).bytes());
    want.extend(1i32.to_be_bytes());
    want.extend(*b"s");
    want.extend(2i32.to_be_bytes());
    want.extend((-720i16).to_be_bytes());
    want.extend(2i32.to_be_bytes());
    want.extend(0i16.to_be_bytes());
    assert_eq!(&buf[..want.len()], &want[..]);
    assert_eq!(buf.len(), want.len() + 12 + 6 + 5 + 8 + 12);
}
