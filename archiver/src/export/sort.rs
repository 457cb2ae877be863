//! The in-memory half of the archiver's external merge sort: rows decoded from a COPY stream
//! are collected into a [`RunBuffer`] of at most a configured number of rows, sorted by
//! (participant_id, metric, ts) in byte order and written out as a sorted run
//! ([`crate::export::runfile`]); [`crate::export::merge`] merges the runs.
//!
//! Strings are interned per run: each distinct value is stored once and a row holds its
//! ids, so a row is 40 bytes whatever its strings. Before sorting, the distinct
//! participant ids and metrics (few, compared with rows) are sorted once and each row's key
//! becomes `(participant rank << 32 | metric rank, ts)`: integer comparisons only. Rows with
//! equal keys keep no particular order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;

use crate::error::{Error, Result};
use crate::export::format;
use crate::export::pgcopy::{field, Spans, PG_EPOCH_MICROS};
use crate::export::runfile::{RowRef, RunWriter, STRINGS};

/// Id of NULL in a row's string ids.
const NULL: u32 = u32::MAX;

/// The COPY fields of the string columns, in [`crate::export::runfile::STRINGS`] order.
const STRING_FIELDS: [usize; STRINGS] = [0, 1, 4, 5, 6];

/// FxHash (rustc's hasher): a multiply-rotate hash, fast on the short strings interned here.
/// Not DoS-resistant, which does not matter for a run's own keys.
#[derive(Debug, Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut c = bytes.chunks_exact(8);
        for w in &mut c {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(x)).wrapping_mul(K);
        }
        for &b in c.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Distinct values of one string column of a run.
#[derive(Debug, Default)]
struct Dict {
    ids: HashMap<Box<[u8]>, u32, BuildHasherDefault<Fx>>,
    values: Vec<Box<[u8]>>,
    last: Option<u32>,
}

impl Dict {
    /// The id of `v`, added if new; `None` if a new value is not UTF-8 (values are checked
    /// once, when added). Consecutive rows often repeat a value, so the previous id is tried
    /// before hashing.
    fn id(&mut self, v: &[u8]) -> Option<u32> {
        if let Some(l) = self.last {
            if *self.values[l as usize] == *v {
                return Some(l);
            }
        }
        let id = match self.ids.get(v) {
            Some(&id) => id,
            None => {
                std::str::from_utf8(v).ok()?;
                let id = self.values.len() as u32;
                self.values.push(v.into());
                self.ids.insert(v.into(), id);
                id
            }
        };
        self.last = Some(id);
        Some(id)
    }

    /// Byte-order rank of each id.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.values[a as usize].cmp(&self.values[b as usize]));
        let mut rank = vec![0; order.len()];
        for (r, id) in order.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        (id != NULL).then(|| &*self.values[id as usize])
    }
}

/// One decoded row of a run.
#[derive(Debug, Clone, Copy)]
struct Row {
    ts: i64,
    value: u64,
    ids: [u32; STRINGS],
}

/// Rows collected for one sorted run.
#[derive(Debug, Default)]
pub struct RunBuffer {
    dicts: [Dict; STRINGS],
    rows: Vec<Row>,
}

fn bad(what: &str, message: String) -> Error {
    Error::Copy {
        chunk: what.to_string(),
        message,
    }
}

impl RunBuffer {
    /// Rows collected.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is collected.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds the COPY tuple `t` with field `spans`; `what` names the stream in errors.
    ///
    /// # Errors
    /// [`Error::Copy`] for a NULL in a NOT NULL column, a wrong field width or text that is
    /// not UTF-8.
    pub fn push_tuple(&mut self, t: &[u8], spans: &Spans, what: &str) -> Result<()> {
        let mut ids = [NULL; STRINGS];
        for (k, &f) in STRING_FIELDS.iter().enumerate() {
            match field(t, spans, f) {
                Some(b) => {
                    ids[k] = self.dicts[k]
                        .id(b)
                        .ok_or_else(|| bad(what, format!("{} is not UTF-8", format::COLUMNS[f])))?;
                }
                None if k < 2 => {
                    return Err(bad(
                        what,
                        format!("NULL in NOT NULL column {}", format::COLUMNS[f]),
                    ))
                }
                None => {}
            }
        }
        let eight = |i: usize| -> Result<[u8; 8]> {
            let f = field(t, spans, i).ok_or_else(|| {
                bad(
                    what,
                    format!("NULL in NOT NULL column {}", format::COLUMNS[i]),
                )
            })?;
            f.try_into().map_err(|_| {
                bad(
                    what,
                    format!("{} has {} bytes, expected 8", format::COLUMNS[i], f.len()),
                )
            })
        };
        let ts = i64::from_be_bytes(eight(2)?).saturating_add(PG_EPOCH_MICROS);
        let value = u64::from_be_bytes(eight(3)?);
        self.rows.push(Row { ts, value, ids });
        Ok(())
    }

    /// Sorts the rows by (participant_id, metric, ts) and writes them to `out` in the run
    /// encoding; the buffer is empty afterwards. Returns the writer.
    ///
    /// # Errors
    /// [`Error::Io`] from `out`.
    pub fn write_sorted<W: Write>(&mut self, out: W) -> Result<W> {
        let (pr, mr) = (self.dicts[0].ranks(), self.dicts[1].ranks());
        let mut keys: Vec<(u64, i64, u32)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let k = (u64::from(pr[r.ids[0] as usize]) << 32) | u64::from(mr[r.ids[1] as usize]);
                (k, r.ts, i as u32)
            })
            .collect();
        keys.sort_unstable();
        let mut w = RunWriter::new(out);
        let mut prev = [NULL; STRINGS];
        for (_, _, i) in keys {
            let r = self.rows[i as usize];
            // Equal ids are equal strings within a run.
            let mask = (0..STRINGS)
                .filter(|&k| r.ids[k] != prev[k])
                .fold(0u8, |m, k| m | (1 << k));
            prev = r.ids;
            w.push_masked(
                &RowRef {
                    strs: std::array::from_fn(|k| self.dicts[k].get(r.ids[k])),
                    ts: r.ts,
                    value: r.value,
                },
                mask,
            )?;
        }
        *self = Self::default();
        w.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::pgcopy::tests::tuple_of;
    use crate::export::pgcopy::{tuple_at, Next};
    use crate::export::runfile::RunReader;

    #[test]
    fn sorts_by_participant_metric_ts_in_byte_order() {
        let input = [
            ("P2", "hr", 5),
            ("P10", "spo2", 1),
            ("P10", "heart_rate_variability_long", 9),
            ("P10", "heart_rate_variability_lone", 9),
            ("P1", "hr", 3),
            ("P1", "hr", 1),
            ("é", "hr", 0),
        ];
        let mut b = RunBuffer::default();
        for (p, m, ts) in input {
            let t = tuple_of(p, m, ts, Some("bpm"));
            let Next::Tuple(spans, _) = tuple_at(&t, "t").unwrap() else {
                panic!()
            };
            b.push_tuple(&t, &spans, "t").unwrap();
        }
        let bytes = b.write_sorted(Vec::new()).unwrap();
        assert!(b.is_empty());
        let mut r = RunReader::new(bytes.as_slice(), "t");
        let mut got = Vec::new();
        while r.advance().unwrap() {
            got.push((
                r.str(0).unwrap().to_string(),
                r.str(1).unwrap().to_string(),
                r.ts - PG_EPOCH_MICROS,
            ));
            assert_eq!(r.str(2), Some("bpm"));
            assert_eq!(r.str(3), None);
        }
        let mut want: Vec<_> = input
            .iter()
            .map(|(p, m, t)| (p.to_string(), m.to_string(), *t))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}
