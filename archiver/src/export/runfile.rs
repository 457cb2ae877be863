//! The compact encoding of a sorted run (a temporary file or, for a run kept in memory, a
//! byte vector) used by the external merge sort ([`crate::export::sort`], [`crate::export::merge`]).
//!
//! A run is a sequence of rows in (participant_id, metric, ts) order, each encoded as
//!
//! ```text
//! u8 mask        bit i set: string column i (participant_id, metric, unit, device_id,
//!                study_id, src_topic) differs from the previous row's (every bit set on the
//!                first row)
//! per set bit:   LEB128 varint (byte length + 1, or 0 for NULL), then the UTF-8 bytes
//! i64 LE         ts, µs since 1970-01-01T00:00:00Z
//! u64 LE         the IEEE 754 bits of value
//! u8 present     bit k set: provenance column k (utc_offset_min, occurrence, received_at,
//!                received_at_type, src_partition, src_offset) is not NULL
//! per set bit:   zigzag LEB128 varint of the value (received_at: minus ts)
//! ```
//!
//! Sorted rows repeat their strings from row to row, so a row is mostly the mask, ts, value
//! and provenance: about 17 bytes, plus about 14 with provenance, instead of about 77 (130)
//! in the COPY stream. The end of the bytes is the end of the run.

use std::io::Write;

use crate::error::Result;
use crate::export::prov::Prov;

mod read;
pub use read::RunReader;

/// String columns of a row, in file order: participant_id, metric, unit, device_id, study_id,
/// src_topic.
pub const STRINGS: usize = 6;

/// One row to write: its string columns (`None` for NULL), ts (µs since the Unix epoch), the
/// bits of value and the other provenance columns.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// participant_id, metric, unit, device_id, study_id, src_topic.
    pub strs: [Option<&'a [u8]>; STRINGS],
    /// µs since the Unix epoch.
    pub ts: i64,
    /// `f64::to_bits` of value.
    pub value: u64,
    /// utc_offset_min, occurrence, received_at, received_at_type, src_partition, src_offset.
    pub prov: Prov,
}

/// Writes rows in the run encoding.
#[derive(Debug)]
pub struct RunWriter<W: Write> {
    out: W,
    prev: [Option<Vec<u8>>; STRINGS],
    first: bool,
    scratch: Vec<u8>,
    rows: u64,
}

/// Appends `x` as an LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

impl<W: Write> RunWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            prev: Default::default(),
            first: true,
            scratch: Vec::with_capacity(256),
            rows: 0,
        }
    }

    /// Appends one row (rows must come in sort order), writing the strings that differ from
    /// the previous row's.
    ///
    /// # Errors
    /// [`crate::error::Error::Io`] from the underlying writer.
    pub fn push(&mut self, row: &RowRef<'_>) -> Result<()> {
        let mut mask = 0u8;
        for (i, (now, prev)) in row.strs.iter().zip(self.prev.iter_mut()).enumerate() {
            if !self.first && now.as_deref() == prev.as_deref() {
                continue;
            }
            mask |= 1 << i;
            match now {
                Some(b) => {
                    let p = prev.get_or_insert_with(Vec::new);
                    p.clear();
                    p.extend_from_slice(b);
                }
                None => *prev = None,
            }
        }
        self.push_masked(row, mask)
    }

    /// Appends one row whose changed strings the caller knows: bit i of `mask` set when
    /// string column i differs from the previous row's (every bit on the first row). A writer
    /// is fed either by this or by [`Self::push`], never both.
    ///
    /// # Errors
    /// [`crate::error::Error::Io`] from the underlying writer.
    pub fn push_masked(&mut self, row: &RowRef<'_>, mask: u8) -> Result<()> {
        let mask = if self.first { (1 << STRINGS) - 1 } else { mask };
        self.first = false;
        let s = &mut self.scratch;
        s.clear();
        s.push(mask);
        for (i, now) in row.strs.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            match now {
                Some(b) => {
                    put_varint(s, b.len() as u64 + 1);
                    s.extend_from_slice(b);
                }
                None => s.push(0),
            }
        }
        s.extend_from_slice(&row.ts.to_le_bytes());
        s.extend_from_slice(&row.value.to_le_bytes());
        row.prov.put_run(row.ts, s);
        self.out.write_all(s)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the underlying writer.
    ///
    /// # Errors
    /// [`crate::error::Error::Io`].
    pub fn finish(mut self) -> Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The first 16 bytes of `b`, zero-padded, as a big-endian integer: comparing these is
/// comparing the bytes as far as they go (text has no NUL byte).
pub fn prefix16(b: &[u8]) -> u128 {
    let mut x = [0u8; 16];
    let n = b.len().min(16);
    x[..n].copy_from_slice(&b[..n]);
    u128::from_be_bytes(x)
}

/// Byte order of two strings with equal [`prefix16`]s.
pub fn tail_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() <= 16 && b.len() <= 16 {
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let prov = Prov::from_options([Some(345), Some(1), Some(-3), Some(1), Some(2), Some(9)]);
        let rows: Vec<RowRef<'_>> = vec![
            RowRef {
                strs: [
                    Some(b"P1"),
                    Some(b"hr"),
                    Some(b"bpm"),
                    None,
                    Some(b"s"),
                    Some(b"t"),
                ],
                ts: -5,
                value: 1.5f64.to_bits(),
                prov,
            },
            RowRef {
                strs: [Some(b"P1"), Some(b"hr"), None, None, Some(b"s"), None],
                ts: 7,
                value: 2.5f64.to_bits(),
                prov: Prov::default(),
            },
            RowRef {
                strs: [
                    Some(b"P2"),
                    Some(&[b'x'; 300]),
                    Some(b""),
                    Some(b"d"),
                    None,
                    Some(b"t"),
                ],
                ts: i64::MAX,
                value: f64::NAN.to_bits(),
                prov: Prov::from_options([None, Some(0), Some(i64::MIN), None, None, None]),
            },
        ];
        let mut w = RunWriter::new(Vec::new());
        for r in &rows {
            w.push(r).unwrap();
        }
        assert_eq!(w.rows(), 3);
        let bytes = w.finish().unwrap();
        let mut r = RunReader::new(bytes.as_slice(), "t");
        for want in &rows {
            assert!(r.advance().unwrap());
            let got = r.row();
            assert_eq!(got.strs, want.strs);
            assert_eq!((got.ts, got.value), (want.ts, want.value));
            assert_eq!(got.prov, want.prov);
        }
        assert!(!r.advance().unwrap());
    }

    #[test]
    fn prefix_order_is_byte_order() {
        let mut v = [
            "P10",
            "P1",
            "P2",
            "",
            "heart_rate",
            "heart_rate_variability_x",
            "heart_rate_variability",
            "Q",
        ];
        let mut by_key = v;
        v.sort();
        by_key.sort_by(|a, b| {
            prefix16(a.as_bytes())
                .cmp(&prefix16(b.as_bytes()))
                .then_with(|| tail_cmp(a.as_bytes(), b.as_bytes()))
        });
        assert_eq!(by_key, v);
    }
}
