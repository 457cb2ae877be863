//! A row's provenance through the export: the columns schema version 12 added
//! (`schemas/sql/0012_provenance.sql`; schemas/README.md, "A reading's identity, time and
//! source"), NULL in rows written before it.
//!
//! `src_topic` is a string and travels with the other strings (interned in a run, repeated
//! from the previous row in the run encoding); the six fixed-width ones travel as a [`Prov`]:
//! decoded from the binary COPY tuple ([`Prov::from_tuple`]), kept in a sort run's rows,
//! written to a run file ([`Prov::put_run`]) and appended to the Arrow batch
//! ([`ProvBuilder`]). [`crate::export::lineage`] gathers an object's lineage while its rows
//! stream.

use arrow::array::ArrayRef;
use arrow::datatypes::{Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};

use crate::error::{Error, Result};
use crate::export::arrays::{NumBuilder, StrBuilder};
use crate::export::format;
use crate::export::pgcopy::{field, Spans, PG_EPOCH_MICROS};

/// Fixed-width provenance columns: `utc_offset_min`, `occurrence`, `received_at`,
/// `received_at_type`, `src_partition`, `src_offset` (bit `k` of [`Prov`]'s presence mask).
pub const FIXED: usize = 6;

/// Their positions in [`format::COLUMNS`] (and fields in the COPY tuple).
const COPY_FIELDS: [usize; FIXED] = [7, 8, 9, 10, 12, 13];
/// Their widths in binary COPY (int2, int2, timestamptz, int2, int4, int8).
const WIDTHS: [usize; FIXED] = [2, 2, 8, 2, 4, 8];
/// Bit of `received_at`, stored relative to `ts` in a run file.
const RECEIVED_AT: usize = 2;

/// The fixed-width provenance columns of one row: 27 bytes, a presence bit each (a clear bit
/// is NULL, whatever the field holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prov {
    received_at: i64,
    src_offset: i64,
    src_partition: i32,
    utc_offset_min: i16,
    occurrence: i16,
    received_at_type: i16,
    present: u8,
}

impl Prov {
    /// From the six values in [`FIXED`] order (`received_at` in µs since the Unix epoch;
    /// each narrowed to its column's type).
    pub fn from_options(values: [Option<i64>; FIXED]) -> Self {
        let mut p = Prov::default();
        for (k, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                p.set(k, v);
            }
        }
        p
    }

    fn set(&mut self, k: usize, v: i64) {
        match k {
            0 => self.utc_offset_min = v as i16,
            1 => self.occurrence = v as i16,
            2 => self.received_at = v,
            3 => self.received_at_type = v as i16,
            4 => self.src_partition = v as i32,
            _ => self.src_offset = v,
        }
        self.present |= 1 << k;
    }

    /// Value `k` (in [`FIXED`] order) widened to i64, `None` for NULL.
    pub fn get(&self, k: usize) -> Option<i64> {
        (self.present & (1 << k) != 0).then(|| match k {
            0 => i64::from(self.utc_offset_min),
            1 => i64::from(self.occurrence),
            2 => self.received_at,
            3 => i64::from(self.received_at_type),
            4 => i64::from(self.src_partition),
            _ => self.src_offset,
        })
    }

    fn present(&self, k: usize) -> bool {
        self.present & (1 << k) != 0
    }

    /// `utc_offset_min`.
    pub fn utc_offset_min(&self) -> Option<i16> {
        self.present(0).then_some(self.utc_offset_min)
    }

    /// `occurrence`.
    pub fn occurrence(&self) -> Option<i16> {
        self.present(1).then_some(self.occurrence)
    }

    /// `received_at`, µs since the Unix epoch.
    pub fn received_at(&self) -> Option<i64> {
        self.present(2).then_some(self.received_at)
    }

    /// `received_at_type`.
    pub fn received_at_type(&self) -> Option<i16> {
        self.present(3).then_some(self.received_at_type)
    }

    /// `src_partition`.
    pub fn src_partition(&self) -> Option<i32> {
        self.present(4).then_some(self.src_partition)
    }

    /// `src_offset`.
    pub fn src_offset(&self) -> Option<i64> {
        self.present(5).then_some(self.src_offset)
    }

    /// The provenance fields of the binary COPY tuple `t` (with `spans`); `what` names the
    /// stream in errors.
    ///
    /// # Errors
    /// [`Error::Copy`] for a field of the wrong width.
    pub fn from_tuple(t: &[u8], spans: &Spans, what: &str) -> Result<Self> {
        let mut p = Prov::default();
        for (k, &f) in COPY_FIELDS.iter().enumerate() {
            let Some(b) = field(t, spans, f) else {
                continue;
            };
            let v = match (WIDTHS[k], b) {
                (2, &[x, y]) => i64::from(i16::from_be_bytes([x, y])),
                (4, &[a, b, c, d]) => i64::from(i32::from_be_bytes([a, b, c, d])),
                (8, b) if b.len() == 8 => {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(b);
                    i64::from_be_bytes(x)
                }
                (w, b) => {
                    return Err(Error::Copy {
                        chunk: what.to_string(),
                        message: format!(
                            "{} has {} bytes, expected {w}",
                            format::COLUMNS[f],
                            b.len()
                        ),
                    })
                }
            };
            let v = if k == RECEIVED_AT {
                v.saturating_add(PG_EPOCH_MICROS)
            } else {
                v
            };
            p.set(k, v);
        }
        Ok(p)
    }

    /// Appends the run-file encoding ([`crate::export::runfile`]) to `out`: the presence
    /// mask, then each present value as a zigzag LEB128 varint (`received_at` as its
    /// difference from the row's `ts`, a few bytes).
    pub fn put_run(&self, ts: i64, out: &mut Vec<u8>) {
        out.push(self.present);
        for k in 0..FIXED {
            if let Some(v) = self.get(k) {
                let v = if k == RECEIVED_AT {
                    v.wrapping_sub(ts)
                } else {
                    v
                };
                crate::export::runfile::put_varint(out, zigzag(v));
            }
        }
    }

    /// Sets value `k` read from a run file (`zz` as [`Self::put_run`] wrote it; `ts` the
    /// row's).
    pub fn set_run(&mut self, k: usize, zz: u64, ts: i64) {
        let v = unzigzag(zz);
        let v = if k == RECEIVED_AT {
            v.wrapping_add(ts)
        } else {
            v
        };
        self.set(k, v);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Column builders ([`crate::export::arrays`]) of the provenance columns of one batch.
#[derive(Debug)]
pub struct ProvBuilder {
    utc_offset_min: NumBuilder<Int16Type>,
    occurrence: NumBuilder<Int16Type>,
    received_at: NumBuilder<TimestampMicrosecondType>,
    received_at_type: NumBuilder<Int16Type>,
    src_topic: StrBuilder,
    src_partition: NumBuilder<Int32Type>,
    src_offset: NumBuilder<Int64Type>,
}

impl ProvBuilder {
    /// Empty builders sized for `rows` rows.
    pub fn new(rows: usize) -> Self {
        Self {
            utc_offset_min: NumBuilder::new(rows),
            occurrence: NumBuilder::new(rows),
            received_at: NumBuilder::with_timezone(rows, "UTC"),
            received_at_type: NumBuilder::new(rows),
            src_topic: StrBuilder::new(rows, rows * 8),
            src_partition: NumBuilder::new(rows),
            src_offset: NumBuilder::new(rows),
        }
    }

    /// Appends one row's provenance.
    #[inline]
    pub fn append(&mut self, src_topic: Option<&str>, p: &Prov) {
        self.utc_offset_min.push_option(p.utc_offset_min());
        self.occurrence.push_option(p.occurrence());
        self.received_at.push_option(p.received_at());
        self.received_at_type.push_option(p.received_at_type());
        self.src_topic.push(src_topic);
        self.src_partition.push_option(p.src_partition());
        self.src_offset.push_option(p.src_offset());
    }

    /// The columns of the rows appended so far, in [`format::COLUMNS`] order (8–14); the
    /// builders start over.
    ///
    /// # Errors
    /// [`Error::Arrow`] when `src_topic`'s values exceed 2 GiB.
    pub fn finish(&mut self) -> Result<[ArrayRef; 7]> {
        Ok([
            self.utc_offset_min.finish(),
            self.occurrence.finish(),
            self.received_at.finish(),
            self.received_at_type.finish(),
            self.src_topic.finish()?,
            self.src_partition.finish(),
            self.src_offset.finish(),
        ])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 345, -210, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn run_encoding_round_trips_values_and_nulls() {
        let ts = 1_700_000_000_000_000;
        for p in [
            Prov::default(),
            Prov::from_options([Some(-210), Some(3), Some(ts - 5), Some(1), Some(7), Some(9)]),
            Prov::from_options([None, Some(0), None, None, Some(0), Some(i64::MAX)]),
        ] {
            let mut out = Vec::new();
            p.put_run(ts, &mut out);
            let mut q = Prov::default();
            let mut at = 1;
            for k in 0..FIXED {
                if out[0] & (1 << k) != 0 {
                    let (mut x, mut shift) = (0u64, 0);
                    loop {
                        let b = out[at];
                        at += 1;
                        x |= u64::from(b & 0x7f) << shift;
                        shift += 7;
                        if b < 0x80 {
                            break;
                        }
                    }
                    q.set_run(k, x, ts);
                }
            }
            assert_eq!(at, out.len());
            assert_eq!(q, p);
        }
    }
}
