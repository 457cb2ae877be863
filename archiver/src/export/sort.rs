//! The in-memory half of the archiver's external merge sort: rows decoded from a COPY stream
//! are collected into a [`RunBuffer`] of at most a configured number of rows, sorted by
//! (participant_id, metric, ts) in byte order and written out as a sorted run
//! ([`crate::export::runfile`]); [`crate::export::merge`] merges the runs.
//!
//! Strings are interned per run: each distinct value is stored once and a row holds its
//! ids, so a row is 72 bytes whatever its strings (ts, value, six string ids and the
//! fixed-width provenance, [`crate::export::prov::Prov`]). Before sorting, the distinct
//! participant ids and metrics (few, compared with rows) are sorted once; the rows are then
//! counted into their (participant, metric) groups in rank order and each group is sorted
//! by ts only if its rows did not arrive in ts order (`sort_by_groups`), or, with more
//! groups than rows, sorted by the key `(participant rank << 32 | metric rank, ts)`
//! (`sort_by_keys`): integer comparisons only either way. Rows with equal keys keep no
//! particular order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;

use crate::error::{Error, Result};
use crate::export::format;
use crate::export::pgcopy::{field, Spans, PG_EPOCH_MICROS};
use crate::export::prov::Prov;
use crate::export::runfile::{RowRef, RunWriter, STRINGS};

/// Id of NULL in a row's string ids.
const NULL: u32 = u32::MAX;

/// The COPY fields of the string columns, in [`crate::export::runfile::STRINGS`] order.
const STRING_FIELDS: [usize; STRINGS] = [0, 1, 4, 5, 6, 11];

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

/// Most distinct values a column's dictionary searches linearly before hashing ([`Dict::id`]).
const SMALL_DICT: usize = 8;

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
    #[inline]
    fn id(&mut self, v: &[u8]) -> Option<u32> {
        if let Some(l) = self.last {
            if *self.values[l as usize] == *v {
                return Some(l);
            }
        }
        // A column of few distinct values (metric, unit, study, topic) is searched, not
        // hashed: a few short comparisons cost less than hashing and probing, and such a column
        // changes value from row to row when the rows interleave metrics.
        if self.values.len() <= SMALL_DICT {
            if let Some(id) = self.values.iter().position(|x| **x == *v) {
                let id = id as u32;
                self.last = Some(id);
                return Some(id);
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
}

/// One decoded row of a run.
#[derive(Debug, Clone, Copy)]
struct Row {
    ts: i64,
    value: u64,
    ids: [u32; STRINGS],
    prov: Prov,
}

/// Rows collected for one sorted run.
///
/// Its two row vectors (the rows as they arrive, and the sorted copy a spilled run is written
/// from) are kept from run to run: a chunk read into many runs allocates them once, and does
/// not fault in fresh pages nor regrow for every run.
#[derive(Debug, Default)]
pub struct RunBuffer {
    dicts: [Dict; STRINGS],
    rows: Vec<Row>,
    /// The sorted rows' allocation, handed back after a run was written.
    sorted: Vec<Row>,
}

fn bad(what: &str, message: String) -> Error {
    Error::Copy {
        chunk: what.to_string(),
        message,
    }
}

impl RunBuffer {
    /// An empty buffer with room for `rows` rows, so that it does not grow by copying while
    /// it fills (the caller bounds `rows` by the run size).
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            dicts: Default::default(),
            rows: Vec::with_capacity(rows),
            sorted: Vec::new(),
        }
    }

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
        let prov = Prov::from_tuple(t, spans, what)?;
        self.rows.push(Row {
            ts,
            value,
            ids,
            prov,
        });
        Ok(())
    }

    /// Sorts the rows by (participant_id, metric, ts) and writes them to `out` in the run
    /// encoding; the buffer is empty afterwards. Returns the writer.
    ///
    /// # Errors
    /// [`Error::Io`] from `out`.
    pub fn write_sorted<W: Write>(&mut self, out: W) -> Result<W> {
        let run = self.take_sorted();
        let w = run.write(out);
        self.sorted = run.rows;
        w
    }

    /// Sorts the rows by (participant_id, metric, ts) and hands them over as a [`SortedRun`];
    /// the buffer is empty afterwards.
    pub fn take_sorted(&mut self) -> SortedRun {
        let (pr, mr) = (self.dicts[0].ranks(), self.dicts[1].ranks());
        let groups = pr.len().saturating_mul(mr.len());
        let mut rows = std::mem::take(&mut self.sorted);
        if groups <= self.rows.len().max(MIN_GROUP_SLOTS) {
            sort_by_groups(&self.rows, &pr, &mr, &mut rows);
        } else {
            sort_by_keys(&self.rows, &pr, &mr, &mut rows);
        }
        self.rows.clear();
        let dicts = std::mem::take(&mut self.dicts);
        SortedRun {
            // Every value was checked to be UTF-8 when it was added (`Dict::id`).
            values: dicts.map(|d| {
                d.values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into())
                    .collect()
            }),
            rows,
        }
    }
}

/// Fewest group slots [`sort_by_groups`] may use whatever the rows (a run of few rows with
/// many distinct participants still takes the linear path).
const MIN_GROUP_SLOTS: usize = 1 << 16;

/// `rows` in (participant rank, metric rank, ts) order by a counting sort on the
/// (participant, metric) group, stable, so each group keeps the rows' arrival order; a group
/// whose rows did not arrive in ts order is then sorted by ts. Rows of a chunk arrive in
/// time order (TimescaleDB appends to the heap in insert order, and producers send in time
/// order), so most groups need no second pass and the sort is two passes over the rows.
/// Needs `pr.len() × mr.len()` counters ([`RunBuffer::take_sorted`] bounds that by the rows).
fn sort_by_groups(rows: &[Row], pr: &[u32], mr: &[u32], out: &mut Vec<Row>) {
    let m = mr.len();
    let group = |r: &Row| pr[r.ids[0] as usize] as usize * m + mr[r.ids[1] as usize] as usize;
    let mut start = vec![0usize; pr.len() * m + 1];
    for r in rows {
        start[group(r) + 1] += 1;
    }
    for g in 1..start.len() {
        start[g] += start[g - 1];
    }
    let mut next = start.clone();
    out.clear();
    out.resize(
        rows.len(),
        Row {
            ts: 0,
            value: 0,
            ids: [NULL; STRINGS],
            prov: Prov::default(),
        },
    );
    for r in rows {
        let g = group(r);
        out[next[g]] = *r;
        next[g] += 1;
    }
    for w in start.windows(2) {
        let g = &mut out[w[0]..w[1]];
        if !g.windows(2).all(|p| p[0].ts <= p[1].ts) {
            g.sort_unstable_by_key(|r| r.ts);
        }
    }
}

/// `rows` in (participant rank, metric rank, ts) order by comparison: for runs with more
/// (participant, metric) combinations than rows to count them in.
fn sort_by_keys(rows: &[Row], pr: &[u32], mr: &[u32], out: &mut Vec<Row>) {
    let mut keys: Vec<(u64, i64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let k = (u64::from(pr[r.ids[0] as usize]) << 32) | u64::from(mr[r.ids[1] as usize]);
            (k, r.ts, i as u32)
        })
        .collect();
    keys.sort_unstable();
    out.clear();
    out.extend(keys.into_iter().map(|(_, _, i)| rows[i as usize]));
}

/// One row of a [`SortedRun`]: participant_id, metric, unit, device_id, study_id, src_topic
/// (in [`crate::export::runfile::STRINGS`] order, `None` for NULL), ts (µs since the Unix
/// epoch), the `f64::to_bits` of value and the other provenance columns.
pub type SortedRow<'a> = ([Option<&'a str>; STRINGS], i64, u64, &'a Prov);

/// A run sorted in memory and not encoded. A chunk that fits in the sort buffer (the usual
/// case) is read into exactly one, which goes straight into record batches: no run
/// encoding, no merge. Holds 72 bytes a row plus each distinct string once.
#[derive(Debug, Default)]
pub struct SortedRun {
    values: [Vec<Box<str>>; STRINGS],
    rows: Vec<Row>,
}

impl SortedRun {
    /// Rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Calls `f` with each row in order.
    ///
    /// # Errors
    /// `f`'s first error, which ends the walk.
    pub fn for_each(&self, mut f: impl FnMut(SortedRow<'_>) -> Result<()>) -> Result<()> {
        for r in &self.rows {
            let strs = std::array::from_fn(|k| {
                let id = r.ids[k];
                (id != NULL).then(|| &*self.values[k][id as usize])
            });
            f((strs, r.ts, r.value, &r.prov))?;
        }
        Ok(())
    }

    /// Writes the rows to `out` in the run encoding ([`crate::export::runfile`]), for a
    /// merge with other runs. Returns the writer.
    ///
    /// # Errors
    /// [`Error::Io`] from `out`.
    pub fn write<W: Write>(&self, out: W) -> Result<W> {
        let mut w = RunWriter::new(out);
        let mut prev = [NULL; STRINGS];
        for r in &self.rows {
            // Equal ids are equal strings within a run.
            let mask = (0..STRINGS)
                .filter(|&k| r.ids[k] != prev[k])
                .fold(0u8, |m, k| m | (1 << k));
            prev = r.ids;
            w.push_masked(
                &RowRef {
                    strs: std::array::from_fn(|k| {
                        (r.ids[k] != NULL).then(|| self.values[k][r.ids[k] as usize].as_bytes())
                    }),
                    ts: r.ts,
                    value: r.value,
                    prov: r.prov,
                },
                mask,
            )?;
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests;
