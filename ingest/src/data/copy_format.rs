//! `measurements` rows in PostgreSQL's `COPY … (FORMAT binary)` format, encoded once when a
//! record is buffered and sent to the shard as-is.
//!
//! The format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, an `i32` flags field (0: no OIDs) and an `i32` header-extension length
//! (0); then per tuple an `i16` field count and, per field, an `i32` byte length (-1 for NULL)
//! followed by the value in its type's binary send format; then an `i16` -1 trailer. All
//! integers are big-endian. Send formats used here: `text` = the UTF-8 bytes; `float8` = the
//! IEEE 754 bits; `int2`/`int4`/`int8` = the integer; `timestamptz` = an `i64` of microseconds
//! since 2000-01-01T00:00:00Z (`timestamp_send` in PostgreSQL's
//! `src/backend/utils/adt/timestamp.c`).
//!
//! A tuple has the fourteen columns of [`vitalsink_common::columns::COLUMNS`]: the reading, its
//! UTC offset and occurrence (per sample), then its record's receipt time and lineage (the same
//! for every sample of a record; schemas/README.md, "A reading's identity, time and source").

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use std::collections::HashMap;
use vitalsink_common::measurement::{Message, Reading, Sample};

/// The COPY statement the encoded tuples are written for; columns in this order
/// ([`vitalsink_common::columns::COLUMNS`]). `table` is `measurements` or a staging table of the
/// same shape.
pub fn copy_sql(table: &str) -> String {
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        vitalsink_common::columns::column_list()
    )
}

/// Where a record came from and when it arrived: the per-record columns of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record's Kafka timestamp, µs since the Unix epoch (Kafka keeps ms); `None` when the
    /// record has none.
    pub received_at_micros: Option<i64>,
    /// Its kind (KIP-32): [`vitalsink_common::columns::RECEIVED_CREATE_TIME`] or
    /// [`vitalsink_common::columns::RECEIVED_LOG_APPEND_TIME`].
    pub received_at_type: Option<i16>,
}

impl<'a> Source<'a> {
    /// The source of a consumed record: its topic, partition, offset and timestamp.
    pub fn of(msg: &'a rdkafka::message::BorrowedMessage<'a>) -> Self {
        use rdkafka::message::{Message as _, Timestamp};
        use vitalsink_common::columns::{RECEIVED_CREATE_TIME, RECEIVED_LOG_APPEND_TIME};
        let (received_at_micros, received_at_type) = match msg.timestamp() {
            Timestamp::CreateTime(ms) => {
                (Some(ms.saturating_mul(1000)), Some(RECEIVED_CREATE_TIME))
            }
            Timestamp::LogAppendTime(ms) => (
                Some(ms.saturating_mul(1000)),
                Some(RECEIVED_LOG_APPEND_TIME),
            ),
            Timestamp::NotAvailable => (None, None),
        };
        Self {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            received_at_micros,
            received_at_type,
        }
    }
}

/// Signature, flags and header-extension length that start the COPY data, 19 bytes.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
const TRAILER: &[u8] = &[0xff, 0xff];
/// Fields per tuple.
const FIELDS: i16 = 14;
/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// Bytes of the timestamp and value fields: two lengths and two 8-byte values.
const MIDDLE_BYTES: usize = 24;
/// Room for the per-record parts of a tuple ([`Frame`]): the field count, five texts of the
/// schema's longest (64 bytes) and a topic name of Kafka's longest (249 bytes), with the fixed
/// fields.
const FRAME_BYTES: usize = 2 + 5 * (4 + 64) + (4 + 249) + 12 + 6 + 8 + 12;

/// Exact bytes [`encode_message`] appends for `msg` from `src`.
pub fn message_len(msg: &Message<'_>, src: &Source<'_>) -> usize {
    let text = |s: Option<&str>| 4 + s.map_or(0, str::len);
    let per_tuple = 2
        + text(Some(&msg.participant_id))
        + text(Some(&msg.metric))
        + MIDDLE_BYTES
        + text(msg.unit.as_deref())
        + text(msg.device_id.as_deref())
        + text(msg.study_id.as_deref())
        + 4 + 2 // occurrence
        + 4 + 2 // utc_offset_min, when known
        + 4 + src.received_at_micros.map_or(0, |_| 8)
        + 4 + src.received_at_type.map_or(0, |_| 2)
        + text(Some(src.topic))
        + 4 + 4
        + 4 + 8;
    let unknown_offsets = msg
        .samples
        .iter()
        .filter(|s| s.utc_offset_min.is_none())
        .count();
    per_tuple * msg.samples.len() - 2 * unknown_offsets
}

/// Appends one tuple per sample of `msg` to `buf`, with `src`'s receipt time and lineage.
///
/// The fields other than a sample's own are the same for every sample of a message, so they
/// are encoded once (`Frame`) and copied per sample.
pub fn encode_message(buf: &mut BytesMut, msg: &Message<'_>, src: &Source<'_>) {
    buf.reserve(message_len(msg, src));
    let frame = Frame::new(
        [&msg.participant_id, &msg.metric],
        [
            msg.unit.as_deref(),
            msg.device_id.as_deref(),
            msg.study_id.as_deref(),
        ],
        src,
    );
    let occurrences = occurrences(&msg.samples);
    for (i, s) in msg.samples.iter().enumerate() {
        let occurrence = occurrences.as_ref().map_or(0, |o| o[i]);
        frame.encode(buf, s, occurrence);
    }
}

/// Appends the tuple of one owned reading to `buf` (occurrence 0: a reading alone in its
/// record).
pub fn encode_reading(buf: &mut BytesMut, r: &Reading, src: &Source<'_>) {
    let frame = Frame::new(
        [&r.participant_id, &r.metric],
        [
            r.unit.as_deref(),
            r.device_id.as_deref(),
            r.study_id.as_deref(),
        ],
        src,
    );
    let s = Sample {
        ts_micros: r.ts_micros,
        value: r.value,
        utc_offset_min: r.utc_offset_min,
    };
    frame.encode(buf, &s, 0);
}

/// Each sample's occurrence in its record: how many earlier samples have the same instant and
/// value (schemas/README.md, "Identity"). `None` when every one is 0, which is known without a
/// map when the instants strictly increase, as a device's samples do.
pub fn occurrences(samples: &[Sample]) -> Option<Vec<i16>> {
    if samples.windows(2).all(|w| w[0].ts_micros < w[1].ts_micros) {
        return None;
    }
    let mut seen: HashMap<(i64, u64), i16> = HashMap::with_capacity(samples.len());
    let out: Vec<i16> = samples
        .iter()
        .map(|s| {
            let n = seen.entry(s.identity()).or_insert(0);
            let this = *n;
            *n = n.saturating_add(1);
            this
        })
        .collect();
    out.iter().any(|&o| o > 0).then_some(out)
}

/// The parts of a record's tuples that do not change from sample to sample: the field count,
/// participant_id and metric (`head`); unit, device_id and study_id (`mid`); receipt time and
/// lineage (`tail`). Kept on the stack when the texts fit, else on the heap.
struct Frame {
    bytes: smallbuf::Buf,
    head: usize,
    mid: usize,
}

/// A byte buffer on the stack up to [`FRAME_BYTES`], on the heap beyond (texts longer than the
/// schema allows, which the decoder never passes).
mod smallbuf {
    // The stack variant is the point: no allocation per reading.
    #[allow(clippy::large_enum_variant)]
    pub enum Buf {
        Stack([u8; super::FRAME_BYTES], usize),
        Heap(Vec<u8>),
    }

    impl Buf {
        pub fn new() -> Self {
            Buf::Stack([0; super::FRAME_BYTES], 0)
        }

        pub fn extend(&mut self, b: &[u8]) {
            match self {
                Buf::Stack(a, n) if *n + b.len() <= a.len() => {
                    a[*n..*n + b.len()].copy_from_slice(b);
                    *n += b.len();
                }
                Buf::Stack(a, n) => {
                    let mut v = a[..*n].to_vec();
                    v.extend_from_slice(b);
                    *self = Buf::Heap(v);
                }
                Buf::Heap(v) => v.extend_from_slice(b),
            }
        }

        pub fn bytes(&self) -> &[u8] {
            match self {
                Buf::Stack(a, n) => &a[..*n],
                Buf::Heap(v) => v,
            }
        }
    }
}

impl Frame {
    fn new(keys: [&str; 2], optional: [Option<&str>; 3], src: &Source<'_>) -> Self {
        let mut b = smallbuf::Buf::new();
        b.extend(&FIELDS.to_be_bytes());
        keys.iter().for_each(|k| text(&mut b, Some(k)));
        let head = b.bytes().len();
        optional.iter().for_each(|o| text(&mut b, *o));
        let mid = b.bytes().len();
        match src.received_at_micros {
            Some(t) => {
                b.extend(&8i32.to_be_bytes());
                b.extend(&(t - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
            }
            None => b.extend(&(-1i32).to_be_bytes()),
        }
        int2(&mut b, src.received_at_type);
        text(&mut b, Some(src.topic));
        b.extend(&4i32.to_be_bytes());
        b.extend(&src.partition.to_be_bytes());
        b.extend(&8i32.to_be_bytes());
        b.extend(&src.offset.to_be_bytes());
        Self {
            bytes: b,
            head,
            mid,
        }
    }

    fn encode(&self, buf: &mut BytesMut, s: &Sample, occurrence: i16) {
        let all = self.bytes.bytes();
        buf.extend_from_slice(&all[..self.head]);
        buf.extend_from_slice(&middle(s.ts_micros, s.value));
        buf.extend_from_slice(&all[self.head..self.mid]);
        match s.utc_offset_min {
            Some(o) => {
                buf.put_i32(2);
                buf.put_i16(o);
            }
            None => buf.put_i32(-1),
        }
        buf.put_i32(2);
        buf.put_i16(occurrence);
        buf.extend_from_slice(&all[self.mid..]);
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

/// A text field: its length and bytes, or length -1 for NULL.
fn text(b: &mut smallbuf::Buf, s: Option<&str>) {
    match s {
        Some(s) => {
            b.extend(&i32::try_from(s.len()).unwrap_or(i32::MAX).to_be_bytes());
            b.extend(s.as_bytes());
        }
        None => b.extend(&(-1i32).to_be_bytes()),
    }
}

/// An `int2` field, or NULL.
fn int2(b: &mut smallbuf::Buf, v: Option<i16>) {
    match v {
        Some(v) => {
            b.extend(&2i32.to_be_bytes());
            b.extend(&v.to_be_bytes());
        }
        None => b.extend(&(-1i32).to_be_bytes()),
    }
}

/// The most bytes of tuples sent in one COPY data message. tokio-postgres copies each message
/// into its connection's write buffer (`postgres_protocol::message::frontend::CopyData::write`),
/// and that buffer keeps its largest size for the life of the connection: a whole batch per
/// message would make every pooled connection hold up to `ingest.batch_max_bytes` outside
/// the memory budget (issue 27: peak RSS over `ingest.memory_cap_bytes`). Slices of the
/// batch are zero-copy, so smaller messages cost only their 5-byte headers.
pub const COPY_MESSAGE_BYTES: usize = 64 << 10;

/// Runs [`copy_sql`]`(table)` in `tx` with the encoded tuples `parts` (each a whole number of
/// tuples; header and trailer are added here), in messages of at most [`COPY_MESSAGE_BYTES`]. Returns the rows PostgreSQL reports copied. No
/// COPY is started when `parts` is empty.
///
/// # Errors
/// The driver's error (the caller's transaction, or its savepoint, is then unusable).
pub async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    parts: &[Bytes],
) -> Result<u64, tokio_postgres::Error> {
    if parts.is_empty() {
        return Ok(0);
    }
    let sink = tx.copy_in::<_, Bytes>(&copy_sql(table)).await?;
    futures::pin_mut!(sink);
    sink.feed(Bytes::from_static(HEADER)).await?;
    for p in parts {
        let mut at = 0;
        while at < p.len() {
            let end = (at + COPY_MESSAGE_BYTES).min(p.len());
            sink.feed(p.slice(at..end)).await?;
            at = end;
        }
    }
    sink.feed(Bytes::from_static(TRAILER)).await?;
    sink.finish().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vitalsink_common::measurement::{decode_message, Limits};

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
}
