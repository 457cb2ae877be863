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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::pgcopy::tests::tuple_of;
    use crate::export::pgcopy::{tuple_at, Next};
    use crate::export::runfile::RunReader;

    #[test]
    fn counting_by_group_and_comparing_keys_agree() {
        // Rows partly in ts order, partly not, over 7 participants × 3 metrics.
        let (pr, mr) = (vec![3, 0, 6, 1, 5, 2, 4], vec![2, 0, 1]);
        let rows: Vec<Row> = (0..5_000u32)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761);
                let ts = if i % 7 == 3 {
                    i64::from(x % 1000)
                } else {
                    i64::from(i)
                };
                Row {
                    ts,
                    value: u64::from(i),
                    ids: [x % 7, (x >> 8) % 3, NULL, NULL, NULL, NULL],
                    prov: Prov::default(),
                }
            })
            .collect();
        let key = |r: &Row| (pr[r.ids[0] as usize], mr[r.ids[1] as usize], r.ts);
        // Into vectors that held other rows before, as a buffer's do from the second run on.
        let stale = |n: usize| vec![rows[n % rows.len()]; n];
        let mut by_groups = stale(7);
        sort_by_groups(&rows, &pr, &mr, &mut by_groups);
        let mut by_keys = stale(9_000);
        sort_by_keys(&rows, &pr, &mr, &mut by_keys);
        let a: Vec<_> = by_groups.iter().map(key).collect();
        let b: Vec<_> = by_keys.iter().map(key).collect();
        assert_eq!(a.len(), rows.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(a, b);
        // The same rows, not only the same keys.
        let mut values: Vec<u64> = by_groups.iter().map(|r| r.value).collect();
        values.sort_unstable();
        assert_eq!(values, (0..5_000).collect::<Vec<u64>>());
    }

    #[test]
    fn an_in_memory_run_holds_the_same_rows_as_an_encoded_one() {
        let mut b = RunBuffer::default();
        for (p, m, ts, unit) in [
            ("P2", "hr", 5, None),
            ("P1", "spo2", 1, Some("%")),
            ("P1", "hr", 9, Some("bpm")),
        ] {
            let t = tuple_of(p, m, ts, unit);
            let Next::Tuple(spans, _) = tuple_at(&t, "t").unwrap() else {
                panic!()
            };
            b.push_tuple(&t, &spans, "t").unwrap();
        }
        let sorted = b.take_sorted();
        assert!(b.is_empty());
        assert_eq!(sorted.len(), 3);
        let mut direct = Vec::new();
        let mut provs = Vec::new();
        sorted
            .for_each(|(s, ts, _, prov)| {
                provs.push((s[5].map(str::to_string), *prov));
                direct.push((
                    s[0].unwrap().to_string(),
                    s[1].unwrap().to_string(),
                    ts - PG_EPOCH_MICROS,
                    s[2].map(str::to_string),
                ));
                Ok(())
            })
            .unwrap();
        let bytes = sorted.write(Vec::new()).unwrap();
        let mut r = RunReader::new(bytes.as_slice(), "t");
        let mut encoded = Vec::new();
        let mut encoded_provs = Vec::new();
        while r.advance().unwrap() {
            encoded_provs.push((r.str(5).map(str::to_string), r.prov));
            encoded.push((
                r.str(0).unwrap().to_string(),
                r.str(1).unwrap().to_string(),
                r.ts - PG_EPOCH_MICROS,
                r.str(2).map(str::to_string),
            ));
        }
        assert_eq!(direct, encoded);
        assert_eq!(provs, encoded_provs);
        // The provenance of tuple_of: offset = ts, received 5 µs after ts, topic `vitals`.
        for ((_, _, ts, _), (topic, p)) in direct.iter().zip(&provs) {
            assert_eq!(topic.as_deref(), Some("vitals"));
            assert_eq!(p.src_offset(), Some(*ts));
            assert_eq!(p.received_at(), Some(ts + PG_EPOCH_MICROS + 5));
            assert_eq!((p.occurrence(), p.utc_offset_min()), (Some(0), Some(60)));
        }
        assert_eq!(
            direct,
            vec![
                ("P1".into(), "hr".into(), 9, Some("bpm".into())),
                ("P1".into(), "spo2".into(), 1, Some("%".into())),
                ("P2".into(), "hr".into(), 5, None),
            ]
        );
    }

    #[test]
    fn a_buffer_reused_for_several_runs_writes_each_run_alone() {
        let runs: [&[(&str, &str, i64)]; 3] = [
            &[("P2", "hr", 5), ("P1", "hr", 9), ("P1", "hr", 3)],
            &[("P9", "spo2", 1)],
            &[("P3", "hr", 2), ("P0", "hr", 7)],
        ];
        let mut b = RunBuffer::with_capacity(2);
        for rows in runs {
            for (p, m, ts) in rows {
                let t = tuple_of(p, m, *ts, Some("bpm"));
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
            }
            let mut want: Vec<_> = rows
                .iter()
                .map(|(p, m, t)| (p.to_string(), m.to_string(), *t))
                .collect();
            want.sort();
            assert_eq!(got, want);
        }
    }

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
