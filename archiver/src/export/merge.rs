//! The merging half of the archiver's external merge sort: sorted runs ([`crate::export::runfile`])
//! are merged into one stream in (participant_id, metric, ts) byte order.
//!
//! At most [`FAN_IN`] runs are merged at once, so memory is `FAN_IN` read buffers of 64 KiB
//! whatever the number of runs; with more runs, the first `FAN_IN` are merged into a new
//! temporary run first, until few enough are left. The merge keeps the runs other than the
//! current one ordered by their next row and takes rows from the current one while it stays
//! the smallest: in sorted runs, rows of one participant and metric come in long stretches,
//! so a row costs one comparison, and at most `log2 FAN_IN` when the runs interleave.

use std::cmp::Ordering;
use std::io::{BufWriter, Cursor, Read, Seek};

use crate::error::{Error, Result};
use crate::export::runfile::{RunReader, RunWriter};

/// Most runs merged at once.
pub const FAN_IN: usize = 64;

/// Write buffer of a temporary run file, bytes.
pub const WRITE_BUF: usize = 256 << 10;

/// A sorted run: an anonymous temporary file (in `TMPDIR`) or bytes kept in memory.
#[derive(Debug)]
pub enum Run {
    /// Spilled to a temporary file, positioned at its start.
    File(std::fs::File),
    /// Kept in memory.
    Memory(Cursor<Vec<u8>>),
}

impl Read for Run {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Run::File(f) => f.read(buf),
            Run::Memory(c) => c.read(buf),
        }
    }
}

impl Run {
    /// Writes a sorted run to a new temporary file through `write` (which gets a buffered
    /// writer and hands it back).
    ///
    /// # Errors
    /// [`Error::Io`], or `write`'s error.
    pub fn spill(
        write: impl FnOnce(BufWriter<std::fs::File>) -> Result<BufWriter<std::fs::File>>,
    ) -> Result<Self> {
        let f = tempfile::tempfile()?;
        let w = write(BufWriter::with_capacity(WRITE_BUF, f))?;
        let mut f = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        f.rewind()?;
        Ok(Run::File(f))
    }
}

/// Merges `runs` and calls `out` with each row in order; `what` names the chunk in errors.
///
/// # Errors
/// [`Error::Io`] or [`Error::Copy`] for an unreadable run, or `out`'s error.
pub fn merge(
    mut runs: Vec<Run>,
    what: &str,
    out: impl FnMut(&RunReader<Run>) -> Result<()>,
) -> Result<()> {
    while runs.len() > FAN_IN {
        let rest = runs.split_off(FAN_IN);
        let group = std::mem::replace(&mut runs, rest);
        let run = Run::spill(|w| {
            let mut w = RunWriter::new(w);
            merge_group(group, what, |r| w.push(&r.row()))?;
            w.finish()
        })?;
        runs.push(run);
    }
    merge_group(runs, what, out)
}

fn merge_group(
    runs: Vec<Run>,
    what: &str,
    mut out: impl FnMut(&RunReader<Run>) -> Result<()>,
) -> Result<()> {
    let mut rs = Vec::with_capacity(runs.len());
    for run in runs {
        let mut r = RunReader::new(run, what);
        if r.advance()? {
            rs.push(r);
        }
    }
    // The other runs, ordered by their current row.
    let mut order: Vec<usize> = (0..rs.len()).collect();
    order.sort_by(|&a, &b| rs[a].cmp_key(&rs[b]));
    if order.is_empty() {
        return Ok(());
    }
    let mut best = order.remove(0);
    loop {
        out(&rs[best])?;
        if !rs[best].advance()? {
            if order.is_empty() {
                return Ok(());
            }
            best = order.remove(0);
            continue;
        }
        if let Some(&next) = order.first() {
            if rs[best].cmp_key(&rs[next]) == Ordering::Greater {
                let b = &rs[best];
                let at = order.partition_point(|&i| rs[i].cmp_key(b) != Ordering::Greater);
                order.insert(at, best);
                best = order.remove(0);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::runfile::RowRef;

    fn write<W: std::io::Write>(w: W, rows: &[(&str, &str, i64)]) -> Result<W> {
        let mut w = RunWriter::new(w);
        for (p, m, ts) in rows {
            w.push(&RowRef {
                strs: [
                    Some(p.as_bytes()),
                    Some(m.as_bytes()),
                    None,
                    None,
                    None,
                    None,
                ],
                ts: *ts,
                value: 0,
                prov: crate::export::prov::Prov::default(),
            })?;
        }
        w.finish()
    }

    fn run(rows: &[(&str, &str, i64)], spill: bool) -> Run {
        if spill {
            Run::spill(|w| write(w, rows)).unwrap()
        } else {
            Run::Memory(Cursor::new(write(Vec::new(), rows).unwrap()))
        }
    }

    #[test]
    fn merges_many_runs_in_order() {
        // More runs than FAN_IN, so an intermediate pass runs too.
        let mut all = Vec::new();
        let mut runs = Vec::new();
        for r in 0..(FAN_IN * 2 + 3) {
            let mut rows: Vec<(String, String, i64)> = (0..20)
                .map(|i| {
                    let x = (r * 7919 + i * 104_729) % 97;
                    (format!("P{}", x % 13), format!("m{}", x % 3), x as i64)
                })
                .collect();
            rows.sort();
            let refs: Vec<(&str, &str, i64)> = rows
                .iter()
                .map(|(p, m, t)| (p.as_str(), m.as_str(), *t))
                .collect();
            runs.push(run(&refs, r % 2 == 0));
            all.extend(rows);
        }
        all.sort();
        let mut got = Vec::new();
        merge(runs, "t", |r| {
            got.push((
                r.str(0).unwrap().to_string(),
                r.str(1).unwrap().to_string(),
                r.ts,
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, all);
    }
}
