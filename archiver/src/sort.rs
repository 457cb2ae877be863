//! Reading a chunk in (participant_id, metric, ts) order with memory bounded by
//! `archive.sort_buffer_rows`, sorting in the archiver instead of in PostgreSQL.
//!
//! A PostgreSQL `ORDER BY` over a whole chunk is a large external sort in the shard (about
//! 8 s of 5M rows here, before the first row comes out), while an unsorted `COPY` streams at
//! once. So, inside one REPEATABLE READ snapshot:
//! 1. `SELECT participant_id, count(*) … GROUP BY 1 ORDER BY 1 COLLATE "C"` gives the
//!    participants in byte order and their rows; consecutive participants are grouped into
//!    buckets of at most `sort_buffer_rows` rows; a participant with more rows than that is
//!    a bucket of its own, read later with `WHERE participant_id = … ORDER BY metric, ts`
//!    (PostgreSQL sorts only that participant, and memory here stays one batch);
//! 2. one unsorted `COPY … TO STDOUT (FORMAT binary)` is split by participant into one
//!    anonymous temporary file per bucket (the raw COPY tuples; the files need about the
//!    chunk's COPY size on the temporary directory's disk, `TMPDIR`);
//! 3. bucket by bucket, in order, the file is read into memory (at most `sort_buffer_rows`
//!    tuples), sorted by (participant_id, metric, ts) in byte order, and turned into batches.
//!
//! Every bucket covers a range of participants disjoint from and above the previous one's,
//! so the concatenation is sorted. Rows with equal keys keep no particular order.

use futures::StreamExt;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Seek, Write};
use tokio_postgres::Client;

use crate::catalog::Chunk;
use crate::error::{pg, Error, Result};
use crate::format;
use crate::pgcopy::{append_tuple, field, ts_of, tuple_at, BatchBuilder, CopyDecoder, Next};

/// A group of participants read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bucket {
    /// Consecutive participants with at most `sort_buffer_rows` rows in all: spilled, then
    /// sorted here.
    Spill {
        /// Rows counted.
        rows: i64,
    },
    /// One participant with more rows than that: sorted by PostgreSQL, streamed.
    Participant(String),
}

/// The buckets of a chunk and which bucket each participant belongs to.
#[derive(Debug, Default)]
pub struct Plan {
    /// Buckets in participant order.
    pub buckets: Vec<Bucket>,
    /// Participant id bytes → bucket index.
    pub of: HashMap<Vec<u8>, usize>,
}

/// Groups participants (in byte order, with their row counts) into buckets of at most
/// `limit` rows.
pub fn group(counts: impl IntoIterator<Item = (String, i64)>, limit: usize) -> Plan {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut plan = Plan::default();
    let mut open: Option<usize> = None;
    for (pid, n) in counts {
        if n > limit {
            plan.of.insert(pid.clone().into_bytes(), plan.buckets.len());
            plan.buckets.push(Bucket::Participant(pid));
            open = None;
            continue;
        }
        let i = match open {
            Some(i) if matches!(plan.buckets[i], Bucket::Spill { rows } if rows + n <= limit) => i,
            _ => {
                plan.buckets.push(Bucket::Spill { rows: 0 });
                plan.buckets.len() - 1
            }
        };
        if let Bucket::Spill { rows } = &mut plan.buckets[i] {
            *rows += n;
        }
        open = Some(i);
        plan.of.insert(pid.into_bytes(), i);
    }
    plan
}

/// Counts the chunk's rows per participant and groups them (step 1).
///
/// # Errors
/// [`Error::Postgres`].
pub async fn plan(c: &Client, shard: &str, chunk: &Chunk, limit: usize) -> Result<Plan> {
    let rows = c
        .query(
            &format!(
                "SELECT participant_id, count(*) FROM {} GROUP BY 1 ORDER BY participant_id COLLATE \"C\"",
                chunk.ident()
            ),
            &[],
        )
        .await
        .map_err(pg(shard))?;
    Ok(group(rows.iter().map(|r| (r.get(0), r.get(1))), limit))
}

/// The `SELECT` list of the archive's columns.
pub fn columns() -> String {
    format::COLUMNS.join(", ")
}

/// Spills the unsorted chunk into one temporary file per `Spill` bucket (step 2); calls
/// `on_rows` with the rows read so far after each COPY message batch (for the rate limit).
/// Returns the files, `None` for `Participant` buckets.
///
/// # Errors
/// [`Error::Postgres`], [`Error::Copy`], [`Error::Io`] (temporary files).
pub async fn spill(
    c: &Client,
    shard: &str,
    chunk: &Chunk,
    plan: &Plan,
    mut on_rows: impl AsyncFnMut(usize),
) -> Result<Vec<Option<std::fs::File>>> {
    let mut files: Vec<Option<BufWriter<std::fs::File>>> = plan
        .buckets
        .iter()
        .map(|b| match b {
            Bucket::Spill { .. } => {
                tempfile::tempfile().map(|f| Some(BufWriter::with_capacity(1 << 18, f)))
            }
            Bucket::Participant(_) => Ok(None),
        })
        .collect::<std::io::Result<_>>()?;
    let sql = format!(
        "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
        columns(),
        chunk.ident()
    );
    let what = chunk.qualified();
    let stream = c.copy_out(sql.as_str()).await.map_err(pg(shard))?;
    let mut stream = std::pin::pin!(stream);
    let mut dec = CopyDecoder::new(&what);
    let mut pending = 0;
    while let Some(data) = stream.next().await {
        dec.push(&data.map_err(pg(shard))?);
        pending += dec.for_each_tuple(|t, spans| {
            let pid = field(t, spans, 0).unwrap_or_default();
            let i = *plan.of.get(pid).ok_or_else(|| Error::Copy {
                chunk: what.clone(),
                message: "a participant not counted in the same snapshot".into(),
            })?;
            if let Some(w) = &mut files[i] {
                w.write_all(t)?;
            }
            Ok(())
        })?;
        if pending >= 4096 {
            on_rows(pending).await;
            pending = 0;
        }
    }
    on_rows(pending).await;
    if !dec.ended() {
        return Err(Error::Copy {
            chunk: what,
            message: "stream ended without the end-of-data marker".into(),
        });
    }
    files
        .into_iter()
        .map(|f| {
            f.map(|w| w.into_inner().map_err(|e| Error::Io(e.into_error())))
                .transpose()
        })
        .collect()
}

/// Sort key of one spilled tuple: the first 8 bytes of participant and metric as big-endian
/// integers (zero-padded; text has no NUL byte, so integer order is byte order as far as they
/// go), their byte ranges for longer ties, `ts`, and the tuple's offset.
#[derive(Debug, Clone, Copy)]
struct Key {
    pid8: u64,
    metric8: u64,
    ts: i64,
    at: usize,
    pid: (usize, usize),
    metric: (usize, usize),
}

/// The first 8 bytes of `b`, zero-padded, as a big-endian integer.
fn prefix8(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    let n = b.len().min(8);
    x[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(x)
}

/// Byte order of two strings whose 8-byte prefixes are equal.
fn tail_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() <= 8 && b.len() <= 8 {
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

/// Reads a bucket's file and appends its tuples in (participant_id, metric, ts) byte order
/// to batches of `batch_rows` rows, handing each full batch to `emit` (step 3).
///
/// # Errors
/// [`Error::Io`], [`Error::Copy`], or `emit`'s error.
pub async fn sorted_batches(
    mut file: std::fs::File,
    what: &str,
    batch_rows: usize,
    builder: &mut BatchBuilder,
    mut emit: impl AsyncFnMut(&mut BatchBuilder) -> Result<()>,
) -> Result<()> {
    file.rewind()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    drop(file);
    let mut keys = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let Next::Tuple(spans, len) = tuple_at(&buf[at..], what)? else {
            return Err(Error::Copy {
                chunk: what.to_string(),
                message: "truncated spill file".into(),
            });
        };
        let t = &buf[at..at + len];
        let range = |i: usize| (at + spans[i].0, spans[i].1.max(0) as usize);
        let (pid, metric) = (range(0), range(1));
        keys.push(Key {
            pid8: prefix8(&buf[pid.0..pid.0 + pid.1]),
            metric8: prefix8(&buf[metric.0..metric.0 + metric.1]),
            ts: ts_of(t, &spans),
            at,
            pid,
            metric,
        });
        at += len;
    }
    let s = |r: (usize, usize)| &buf[r.0..r.0 + r.1];
    keys.sort_unstable_by(|a, b| {
        a.pid8
            .cmp(&b.pid8)
            .then_with(|| tail_cmp(s(a.pid), s(b.pid)))
            .then(a.metric8.cmp(&b.metric8))
            .then_with(|| tail_cmp(s(a.metric), s(b.metric)))
            .then(a.ts.cmp(&b.ts))
    });
    for k in keys {
        if let Next::Tuple(spans, len) = tuple_at(&buf[k.at..], what)? {
            append_tuple(&buf[k.at..k.at + len], &spans, builder, what)?;
        }
        if builder.len() >= batch_rows {
            emit(builder).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_order_is_byte_order() {
        let mut v = [
            "P10",
            "P1",
            "P2",
            "P100000000",
            "P10000000",
            "P1000000000a",
            "Q",
            "",
        ];
        let mut by_key = v;
        v.sort();
        by_key.sort_by(|a, b| {
            prefix8(a.as_bytes())
                .cmp(&prefix8(b.as_bytes()))
                .then_with(|| tail_cmp(a.as_bytes(), b.as_bytes()))
        });
        assert_eq!(by_key, v);
    }

    #[test]
    fn buckets_hold_at_most_the_limit() {
        let counts = [("a", 3), ("b", 4), ("c", 9), ("d", 1), ("e", 2), ("f", 5)]
            .map(|(p, n)| (p.to_string(), n));
        let p = group(counts, 6);
        assert_eq!(
            p.buckets,
            [
                Bucket::Spill { rows: 3 },
                Bucket::Spill { rows: 4 },
                Bucket::Participant("c".into()),
                Bucket::Spill { rows: 3 },
                Bucket::Spill { rows: 5 },
            ]
        );
        assert_eq!(p.of[b"b".as_slice()], 1);
        assert_eq!(p.of[b"e".as_slice()], 3);
    }
}
