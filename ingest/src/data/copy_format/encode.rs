//! Encoding readings as COPY tuples: a record's per-record fields are encoded once into a
//! `Frame` and copied per sample, between each sample's timestamp, value, UTC offset and
//! occurrence.

use super::{Source, FIELDS, PG_EPOCH_OFFSET_MICROS};
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use vitalsink_common::measurement::{Message, Reading, Sample};

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
