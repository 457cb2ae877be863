//! Decoder of PostgreSQL's binary COPY format (PostgreSQL docs, "COPY", section "Binary
//! Format") for the archive's fourteen columns ([`format::COLUMNS`]), straight into column
//! builders ([`crate::export::arrays`]) that become Arrow arrays.
//!
//! Stream: an 11-byte signature `PGCOPY\n\377\r\n\0`, a 32-bit flags field, a 32-bit header
//! extension length and that many bytes; then tuples, each a 16-bit field count followed by
//! that many fields (32-bit length, -1 for NULL, then the bytes); then a field count of -1.
//! All integers are big-endian. `timestamptz` is an int64 of microseconds since
//! 2000-01-01T00:00:00Z; `float8` is an IEEE 754 double; `int2`, `int4`, `int8` are 2, 4 and 8
//! bytes (the provenance columns, [`crate::export::prov`]).
//!
//! The decoder keeps only the bytes of an incomplete tuple between calls, so its memory is one
//! tuple plus one COPY message whatever the chunk's size.

use arrow::array::RecordBatch;
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use bytes::{Buf, BytesMut};

use crate::error::{Error, Result};
use crate::export::arrays::{NumBuilder, StrBuilder};
use crate::export::format;
use crate::export::prov::{Prov, ProvBuilder};
use crate::export::runfile::STRINGS;

/// Microseconds from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Columns of the archive's COPY stream ([`format::COLUMNS`]).
pub const FIELDS: usize = format::COLUMNS.len();

/// Column builders ([`crate::export::arrays`]) for one batch of the archive schema.
#[derive(Debug)]
pub struct BatchBuilder {
    pid: StrBuilder,
    metric: StrBuilder,
    ts: NumBuilder<TimestampMicrosecondType>,
    value: NumBuilder<Float64Type>,
    opt: [StrBuilder; 3],
    prov: ProvBuilder,
    rows: usize,
    /// Rows the builders are sized for, again after every [`Self::finish`].
    capacity: usize,
}

impl BatchBuilder {
    /// Empty builders sized for `rows` rows.
    pub fn new(rows: usize) -> Self {
        let s = || StrBuilder::new(rows, rows * 8);
        Self {
            pid: s(),
            metric: s(),
            ts: NumBuilder::with_timezone(rows, "UTC"),
            value: NumBuilder::new(rows),
            opt: [s(), s(), s()],
            prov: ProvBuilder::new(rows),
            rows: 0,
            capacity: rows,
        }
    }

    /// Rows appended since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended since the last [`Self::finish`].
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row: its strings in [`crate::export::runfile::STRINGS`] order
    /// (participant_id, metric, unit, device_id, study_id, src_topic; `None` for NULL, an
    /// empty participant_id or metric for `None`), ts (µs since the Unix epoch), value and
    /// the other provenance columns.
    #[inline]
    pub fn append(&mut self, strs: [Option<&str>; STRINGS], ts: i64, value: f64, prov: &Prov) {
        self.pid.push(Some(strs[0].unwrap_or_default()));
        self.metric.push(Some(strs[1].unwrap_or_default()));
        self.ts.push(ts);
        self.value.push(value);
        for (col, v) in self.opt.iter_mut().zip(&strs[2..5]) {
            col.push(*v);
        }
        self.prov.append(strs[5], prov);
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch; the builders start over, sized for as many
    /// rows as at first (a reused, emptied vector would regrow by reallocating, copying what it
    /// holds, in every batch).
    ///
    /// # Errors
    /// [`Error::Arrow`] if the columns do not match the schema (a bug).
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut full = std::mem::replace(self, BatchBuilder::new(self.capacity));
        let mut cols = vec![
            full.pid.finish()?,
            full.metric.finish()?,
            full.ts.finish(),
            full.value.finish(),
            full.opt[0].finish()?,
            full.opt[1].finish()?,
            full.opt[2].finish()?,
        ];
        cols.extend(full.prov.finish()?);
        Ok(RecordBatch::try_new(format::schema(), cols)?)
    }
}

/// What the bytes hold next.
#[derive(Debug)]
pub enum Next {
    /// An incomplete tuple.
    NeedMore,
    /// The end-of-data marker.
    End,
    /// A complete tuple: field spans `(offset, length or -1)` and its total length.
    Tuple(Spans, usize),
}

/// Incremental decoder of one COPY … TO STDOUT (FORMAT binary) stream.
#[derive(Debug)]
pub struct CopyDecoder {
    buf: BytesMut,
    header_done: bool,
    ended: bool,
    what: String,
}

impl CopyDecoder {
    /// A decoder for the stream of `what` (named in errors).
    pub fn new(what: &str) -> Self {
        Self {
            buf: BytesMut::with_capacity(64 << 10),
            header_done: false,
            ended: false,
            what: what.to_string(),
        }
    }

    fn bad(&self, message: impl Into<String>) -> Error {
        Error::Copy {
            chunk: self.what.clone(),
            message: message.into(),
        }
    }

    /// Appends the bytes of one COPY data message.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether the end-of-data marker was seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Decodes complete tuples into `out` until it holds `limit` rows or the buffered bytes
    /// run out. Returns the number of rows decoded.
    ///
    /// # Errors
    /// [`Error::Copy`] on a bad signature, a tuple without fourteen fields, a NULL in a NOT NULL
    /// column, a wrong field width or text that is not UTF-8.
    pub fn decode(&mut self, out: &mut BatchBuilder, limit: usize) -> Result<usize> {
        if !self.header()? {
            return Ok(0);
        }
        let mut n = 0;
        while n < limit && !self.ended {
            match self.next_tuple()? {
                Next::NeedMore => break,
                Next::End => {
                    self.buf.advance(2);
                    self.ended = true;
                }
                Next::Tuple(spans, total) => {
                    self.append(&spans, out)?;
                    self.buf.advance(total);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Skips the header once it is complete; false while it is not.
    fn header(&mut self) -> Result<bool> {
        if self.header_done {
            return Ok(true);
        }
        if self.buf.len() < 19 {
            return Ok(false);
        }
        if &self.buf[..11] != SIGNATURE {
            return Err(self.bad("not a binary COPY stream"));
        }
        let ext =
            u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]) as usize;
        if self.buf.len() < 19 + ext {
            return Ok(false);
        }
        self.buf.advance(19 + ext);
        self.header_done = true;
        Ok(true)
    }

    /// Calls `f` with the bytes and spans of every complete tuple buffered, then drops them.
    /// Returns the number of tuples.
    ///
    /// # Errors
    /// As [`tuple_at`], or `f`'s error.
    pub fn for_each_tuple(
        &mut self,
        mut f: impl FnMut(&[u8], &Spans) -> Result<()>,
    ) -> Result<usize> {
        if !self.header()? {
            return Ok(0);
        }
        let (n, at) = scan(&self.buf, &mut self.ended, &self.what, &mut f)?;
        self.buf.advance(at);
        Ok(n)
    }

    /// [`Self::push`] then [`Self::for_each_tuple`], without copying `data` when nothing is
    /// buffered: its complete tuples are read where they are, and only an incomplete one at
    /// its end is kept. (A reader's blocks hold whole COPY messages, one tuple each, so after
    /// the header that is every block.)
    ///
    /// # Errors
    /// As [`Self::for_each_tuple`].
    pub fn push_each_tuple(
        &mut self,
        data: &[u8],
        mut f: impl FnMut(&[u8], &Spans) -> Result<()>,
    ) -> Result<usize> {
        if !self.buf.is_empty() || !self.header_done {
            self.push(data);
            return self.for_each_tuple(f);
        }
        let (n, at) = scan(data, &mut self.ended, &self.what, &mut f)?;
        self.buf.extend_from_slice(&data[at..]);
        Ok(n)
    }

    /// Where the next tuple's fields are, if it is complete.
    fn next_tuple(&self) -> Result<Next> {
        tuple_at(&self.buf, &self.what)
    }

    fn append(&self, spans: &Spans, out: &mut BatchBuilder) -> Result<()> {
        append_tuple(&self.buf, spans, out, &self.what)
    }
}

/// Calls `f` with every complete tuple at the start of `b` until the end marker (which sets
/// `ended`) or an incomplete tuple; returns the tuples and the bytes they took.
fn scan(
    b: &[u8],
    ended: &mut bool,
    what: &str,
    f: &mut impl FnMut(&[u8], &Spans) -> Result<()>,
) -> Result<(usize, usize)> {
    let mut at = 0;
    let mut n = 0;
    while !*ended {
        match tuple_at(&b[at..], what)? {
            Next::NeedMore => break,
            Next::End => {
                at += 2;
                *ended = true;
            }
            Next::Tuple(spans, len) => {
                f(&b[at..at + len], &spans)?;
                at += len;
                n += 1;
            }
        }
    }
    Ok((n, at))
}

/// Field spans `(offset, length or -1)` of one tuple, offsets from the tuple's start (a COPY
/// message, so a tuple, is at most 1 GB).
pub type Spans = [(u32, i32); FIELDS];

fn bad(what: &str, message: impl Into<String>) -> Error {
    Error::Copy {
        chunk: what.to_string(),
        message: message.into(),
    }
}

/// Parses the tuple at the start of `b` (binary COPY tuple layout): its spans and length, the
/// end marker, or `NeedMore` when `b` holds only part of it. `what` names the stream in errors.
///
/// # Errors
/// [`Error::Copy`] for a tuple without [`FIELDS`] fields.
pub fn tuple_at(b: &[u8], what: &str) -> Result<Next> {
    if b.len() < 2 {
        return Ok(Next::NeedMore);
    }
    let count = i16::from_be_bytes([b[0], b[1]]);
    if count == -1 {
        return Ok(Next::End);
    }
    if count as usize != FIELDS {
        return Err(bad(
            what,
            format!("tuple with {count} fields, expected {FIELDS}"),
        ));
    }
    let mut spans = [(0u32, 0i32); FIELDS];
    let mut at = 2;
    for span in &mut spans {
        if b.len() < at + 4 {
            return Ok(Next::NeedMore);
        }
        let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        at += 4;
        let offset = u32::try_from(at).map_err(|_| bad(what, "tuple of more than 4 GiB"))?;
        *span = (offset, len);
        if len > 0 {
            at += len as usize;
        }
    }
    if b.len() < at {
        return Ok(Next::NeedMore);
    }
    Ok(Next::Tuple(spans, at))
}

/// The bytes of field `i` of the tuple `b` with `spans` (`None` for NULL).
pub fn field<'a>(b: &'a [u8], spans: &Spans, i: usize) -> Option<&'a [u8]> {
    let (at, len) = spans[i];
    let at = at as usize;
    (len >= 0).then(|| &b[at..at + len as usize])
}

/// `ts` of a tuple, µs since the Unix epoch (0 when malformed; [`append_tuple`] rejects it).
pub fn ts_of(b: &[u8], spans: &Spans) -> i64 {
    field(b, spans, 2)
        .and_then(|f| <[u8; 8]>::try_from(f).ok())
        .map_or(0, |x| i64::from_be_bytes(x).saturating_add(PG_EPOCH_MICROS))
}

/// Appends the tuple `b` (with `spans`) to `out`.
///
/// # Errors
/// [`Error::Copy`] for a NULL in a NOT NULL column, a wrong field width or text that is not
/// UTF-8.
pub fn append_tuple(b: &[u8], spans: &Spans, out: &mut BatchBuilder, what: &str) -> Result<()> {
    let text = |i: usize| -> Result<Option<&str>> {
        field(b, spans, i)
            .map(|f| {
                std::str::from_utf8(f)
                    .map_err(|_| bad(what, format!("{} is not UTF-8", format::COLUMNS[i])))
            })
            .transpose()
    };
    let required = |i: usize| {
        bad(
            what,
            format!("NULL in NOT NULL column {}", format::COLUMNS[i]),
        )
    };
    let eight = |i: usize| -> Result<[u8; 8]> {
        let f = field(b, spans, i).ok_or_else(|| required(i))?;
        f.try_into().map_err(|_| {
            bad(
                what,
                format!("{} has {} bytes, expected 8", format::COLUMNS[i], f.len()),
            )
        })
    };
    let pid = text(0)?.ok_or_else(|| required(0))?;
    let metric = text(1)?.ok_or_else(|| required(1))?;
    let ts = i64::from_be_bytes(eight(2)?).saturating_add(PG_EPOCH_MICROS);
    let value = f64::from_be_bytes(eight(3)?);
    let opt = [text(4)?, text(5)?, text(6)?];
    let prov = Prov::from_tuple(b, spans, what)?;
    let topic = text(11)?;
    out.append(
        [Some(pid), Some(metric), opt[0], opt[1], opt[2], topic],
        ts,
        value,
        &prov,
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;
