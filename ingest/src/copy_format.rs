//! `measurements` rows in PostgreSQL's `COPY … (FORMAT binary)` format, encoded once when a
//! record is buffered and sent to the shard as-is.
//!
//! The format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, an `i32` flags field (0: no OIDs) and an `i32` header-extension length
//! (0); then per tuple an `i16` field count and, per field, an `i32` byte length (-1 for NULL)
//! followed by the value in its type's binary send format; then an `i16` -1 trailer. All
//! integers are big-endian. Send formats used here: `text` = the UTF-8 bytes; `float8` = the
//! IEEE 754 bits; `timestamptz` = an `i64` of microseconds since 2000-01-01T00:00:00Z
//! (`timestamp_send` in PostgreSQL's `src/backend/utils/adt/timestamp.c`).

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use vitalsink_common::measurement::{Message, Reading};

/// The COPY statement the encoded tuples are written for; columns in this order.
pub const COPY_SQL: &str =
    "COPY measurements (participant_id, metric, ts, value, unit, device_id, study_id) FROM STDIN (FORMAT binary)";

/// Signature, flags and header-extension length that start the COPY data, 19 bytes.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
const TRAILER: &[u8] = &[0xff, 0xff];
/// Fields per tuple.
const FIELDS: i16 = 7;
/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Bytes of one tuple besides its strings: the field count (2), seven lengths (7 × 4), the
/// timestamp (8) and the value (8).
const FIXED_TUPLE_BYTES: usize = 2 + 7 * 4 + 8 + 8;

/// Exact bytes [`encode_message`] appends for `msg`.
pub fn message_len(msg: &Message<'_>) -> usize {
    let opt = |s: &Option<std::borrow::Cow<'_, str>>| s.as_deref().map_or(0, str::len);
    let per_tuple = FIXED_TUPLE_BYTES
        + msg.participant_id.len()
        + msg.metric.len()
        + opt(&msg.unit)
        + opt(&msg.device_id)
        + opt(&msg.study_id);
    per_tuple * msg.samples.len()
}

/// Appends one tuple per sample of `msg` to `buf`.
///
/// The fields around the timestamp and value are the same for every sample of a message, so
/// they are encoded once ([`TupleFrame`]) and copied per sample: three slice copies per row.
pub fn encode_message(buf: &mut BytesMut, msg: &Message<'_>) {
    buf.reserve(message_len(msg));
    encode_samples(
        buf,
        [&msg.participant_id, &msg.metric],
        [
            msg.unit.as_deref(),
            msg.device_id.as_deref(),
            msg.study_id.as_deref(),
        ],
        &msg.samples,
    );
}

/// Appends the tuple of one owned reading to `buf`.
pub fn encode_reading(buf: &mut BytesMut, r: &Reading) {
    encode_samples(
        buf,
        [&r.participant_id, &r.metric],
        [
            r.unit.as_deref(),
            r.device_id.as_deref(),
            r.study_id.as_deref(),
        ],
        &[(r.ts_micros, r.value)],
    );
}

fn encode_samples(
    buf: &mut BytesMut,
    keys: [&str; 2],
    optional: [Option<&str>; 3],
    samples: &[(i64, f64)],
) {
    match TupleFrame::new(keys, optional) {
        Some(mut frame) => samples
            .iter()
            .for_each(|&(ts, value)| frame.encode(buf, ts, value)),
        // Longer text than the schema allows (not from the decoder): field by field.
        None => samples.iter().for_each(|&(ts, value)| {
            buf.put_i16(FIELDS);
            keys.iter().for_each(|k| put_field(buf, Some(k)));
            buf.put_slice(&middle(ts, value));
            optional.iter().for_each(|o| put_field(buf, *o));
        }),
    }
}

/// Longest text a [`TupleFrame`] holds per field, bytes: the schema's id limit.
const FRAME_TEXT_MAX: usize = 64;
/// Bytes of the timestamp and value fields: two lengths and two 8-byte values.
const MIDDLE_BYTES: usize = 24;
/// Room for a whole tuple whose texts are at most [`FRAME_TEXT_MAX`] bytes.
const FRAME_BYTES: usize = 2 + 5 * (4 + FRAME_TEXT_MAX) + MIDDLE_BYTES;

/// One encoded tuple of a message, kept on the stack: the fields before the timestamp (field
/// count, participant_id, metric) and after the value (unit, device_id, study_id) are the same
/// for every sample, so each row only patches its timestamp and value in and is copied out
/// whole.
struct TupleFrame {
    bytes: [u8; FRAME_BYTES],
    len: usize,
    /// Where the timestamp and value fields start.
    middle: usize,
}

impl TupleFrame {
    /// `None` when a text is longer than [`FRAME_TEXT_MAX`].
    fn new(keys: [&str; 2], optional: [Option<&str>; 3]) -> Option<Self> {
        let mut f = Self {
            bytes: [0; FRAME_BYTES],
            len: 2,
            middle: 0,
        };
        f.bytes[..2].copy_from_slice(&FIELDS.to_be_bytes());
        for k in keys {
            f.len = frame_text(&mut f.bytes, f.len, Some(k))?;
        }
        f.middle = f.len;
        f.len += MIDDLE_BYTES;
        for o in optional {
            f.len = frame_text(&mut f.bytes, f.len, o)?;
        }
        Some(f)
    }

    fn encode(&mut self, buf: &mut BytesMut, ts_micros: i64, value: f64) {
        self.bytes[self.middle..self.middle + MIDDLE_BYTES]
            .copy_from_slice(&middle(ts_micros, value));
        buf.extend_from_slice(&self.bytes[..self.len]);
    }
}

/// The timestamp and value fields: length 8 and the PostgreSQL-epoch microseconds, length 8
/// and the IEEE 754 bits.
fn middle(ts_micros: i64, value: f64) -> [u8; MIDDLE_BYTES] {
    let mut m = [0u8; MIDDLE_BYTES];
    m[..4].copy_from_slice(&8i32.to_be_bytes());
    m[4..12].copy_from_slice(&(ts_micros - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
    m[12..16].copy_from_slice(&8i32.to_be_bytes());
    m[16..].copy_from_slice(&value.to_bits().to_be_bytes());
    m
}

/// Writes a text field (length and bytes, or length -1 for NULL) at `at` in `out`; returns
/// the end, or `None` when the text is longer than [`FRAME_TEXT_MAX`].
fn frame_text(out: &mut [u8], at: usize, s: Option<&str>) -> Option<usize> {
    let Some(s) = s else {
        out[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes());
        return Some(at + 4);
    };
    if s.len() > FRAME_TEXT_MAX {
        return None;
    }
    out[at..at + 4].copy_from_slice(&i32::try_from(s.len()).ok()?.to_be_bytes());
    out[at + 4..at + 4 + s.len()].copy_from_slice(s.as_bytes());
    Some(at + 4 + s.len())
}

fn put_field(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            buf.put_i32(i32::try_from(s.len()).unwrap_or(i32::MAX));
            buf.put_slice(s.as_bytes());
        }
        None => buf.put_i32(-1),
    }
}

/// Runs [`COPY_SQL`] in `tx` with the encoded tuples `parts` (each a whole number of tuples;
/// header and trailer are added here). Returns the rows PostgreSQL reports copied. No COPY is
/// started when `parts` is empty.
///
/// # Errors
/// The driver's error (the caller's transaction is then unusable).
pub async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    parts: Vec<Bytes>,
) -> Result<u64, tokio_postgres::Error> {
    if parts.is_empty() {
        return Ok(0);
    }
    let sink = tx.copy_in::<_, Bytes>(COPY_SQL).await?;
    futures::pin_mut!(sink);
    sink.feed(Bytes::from_static(HEADER)).await?;
    for p in parts {
        sink.feed(p).await?;
    }
    sink.feed(Bytes::from_static(TRAILER)).await?;
    sink.finish().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vitalsink_common::measurement::{decode_message, Limits};

    #[test]
    fn message_len_is_exact_and_tuples_match_readings() {
        let body = br#"{"participant_id":"P1","metric":"hr","unit":"bpm","samples":[{"ts":"2026-01-01T00:00:00Z","value":60},{"ts":"2026-01-01T00:00:01.5Z","value":61.5}]}"#;
        let now = 1_795_219_200_000_000;
        let msg = decode_message(body, &Limits::default(), now).unwrap();
        let mut a = BytesMut::new();
        encode_message(&mut a, &msg);
        assert_eq!(a.len(), message_len(&msg));
        let mut b = BytesMut::new();
        for r in msg.readings() {
            encode_reading(&mut b, &r);
        }
        assert_eq!(a, b);
        // First tuple: 7 fields, "P1", "hr", then 2026-01-01T00:00:00Z as PostgreSQL µs.
        assert_eq!(&a[..2], &7i16.to_be_bytes());
        assert_eq!(&a[2..8], b"\0\0\0\x02P1");
        assert_eq!(&a[8..14], b"\0\0\0\x02hr");
        let pg_micros = 1_767_225_600_000_000i64 - PG_EPOCH_OFFSET_MICROS;
        assert_eq!(&a[18..26], &pg_micros.to_be_bytes());
        assert_eq!(&a[30..38], &60f64.to_be_bytes());
        assert_eq!(&a[38..45], b"\0\0\0\x03bpm");
        assert_eq!(&a[45..53], b"\xff\xff\xff\xff\xff\xff\xff\xff", "two NULLs");
    }

    #[test]
    fn text_longer_than_the_frame_is_encoded_field_by_field() {
        let r = Reading {
            participant_id: "p".repeat(100),
            metric: "hr".into(),
            ts_micros: PG_EPOCH_OFFSET_MICROS + 5,
            value: 1.5,
            unit: None,
            device_id: Some("d".repeat(65)),
            study_id: Some("s".into()),
        };
        let mut buf = BytesMut::new();
        encode_reading(&mut buf, &r);
        let mut want = 7i16.to_be_bytes().to_vec();
        want.extend(100i32.to_be_bytes());
        want.extend("p".repeat(100).bytes());
        want.extend(2i32.to_be_bytes());
        want.extend(*b"hr");
        want.extend(8i32.to_be_bytes());
        want.extend(5i64.to_be_bytes());
        want.extend(8i32.to_be_bytes());
        want.extend(1.5f64.to_bits().to_be_bytes());
        want.extend((-1i32).to_be_bytes());
        want.extend(65i32.to_be_bytes());
        want.extend("d".repeat(65).bytes());
        want.extend(1i32.to_be_bytes());
        want.extend(*b"s");
        assert_eq!(&buf[..], &want[..]);
    }
}
