//! The `blake3-col` checksum ([`super`]): each column hashed as a stream of its own, strings
//! as runs of equal values, numbers straight from Arrow's value buffers.
//!
//! Per column, in the archive's column order, over all rows in file order:
//!
//! - a string column is one BLAKE3 stream of its maximal runs of equal cells (two NULLs are
//!   equal; a NULL never equals a value), each run written as
//!   `u64 LE run length, u8 0 (NULL) or 1, [u32 LE byte length, UTF-8 bytes when 1]`;
//! - a number column is two BLAKE3 streams: its maximal runs of present / NULL cells, each
//!   `u64 LE run length, u8 1 (present) or 0 (NULL)`, and the little-endian bytes of its
//!   present values only (`i16`, `i32`, `i64`; `ts` and `received_at` as `i64` µs since
//!   1970-01-01T00:00:00Z; `value` as the `u64` IEEE 754 bits of the `f64`).
//!
//! The checksum is BLAKE3 over `b"vitalsink blake3-col 1\0"`, the u32 LE column count (7 for a
//! format version 1 object, 14 for version 2; 0 for an object without rows, which has no
//! streams), the u64 LE row count, and then each column's 32-byte stream digests in column
//! order (a number column's run digest before its values digest); written
//! `blake3-col:<64 hex digits>`.
//!
//! Why: the row encoding of `blake3:` writes every cell of every row through one cursor per
//! row (measured 72 ns a row on 5 M rows of 14 columns); here a number column costs what
//! BLAKE3 takes over its value buffer, and a string column one comparison a row (one key
//! comparison for a dictionary column as verification reads them back), because the archive
//! is sorted by participant, metric and time and most string columns repeat a value for
//! thousands of rows. Runs are maximal over the whole object, so batch boundaries, plain or
//! dictionary strings, and how a dictionary is laid out do not change the checksum.

use arrow::array::{Array, ArrayAccessor, PrimitiveArray, StringArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowPrimitiveType, ToByteSlice};

use crate::error::{Error, Result};
use crate::export::format::{Columns, DictStrings};

#[cfg(target_endian = "big")]
compile_error!("the blake3-col checksum hashes numbers' in-memory bytes as little-endian ones");

/// The prefix every checksum stream starts from: names the encoding and its version.
const DOMAIN: &[u8] = b"vitalsink blake3-col 1\0";
/// The string columns' places in the archive's column order ([`crate::export::format`]);
/// the others are numbers.
const STR_COLUMNS: [usize; 6] = [0, 1, 4, 5, 6, 11];
/// Bytes of runs gathered before they are handed to BLAKE3.
const RUN_BUF: usize = 16 << 10;

/// A string column's cells as maximal runs within one batch: plain strings compare their
/// bytes row to row, dictionary strings their keys first.
pub(crate) trait StrRuns {
    /// Calls `f(run length, cell)` for each maximal run of equal cells in row order (`None`
    /// for NULL).
    fn for_each_run(&self, f: &mut dyn FnMut(u64, Option<&[u8]>));
}

/// Whether row `i` of a column with null bitmap `nulls` holds a value.
fn valid(nulls: Option<&NullBuffer>, i: usize) -> bool {
    nulls.is_none_or(|n| n.is_valid(i))
}

impl StrRuns for &StringArray {
    fn for_each_run(&self, f: &mut dyn FnMut(u64, Option<&[u8]>)) {
        let n = self.len();
        if n == 0 {
            return;
        }
        let (offsets, data, nulls) = (self.value_offsets(), self.value_data(), self.nulls());
        let cell = |i: usize| -> Option<&[u8]> {
            if !valid(nulls, i) {
                return None;
            }
            let (lo, hi) = (offsets[i] as usize, offsets[i + 1] as usize);
            data.get(lo..hi)
        };
        let (mut start, mut cur) = (0, cell(0));
        for i in 1..n {
            let c = cell(i);
            if c != cur {
                f((i - start) as u64, cur);
                (start, cur) = (i, c);
            }
        }
        f((n - start) as u64, cur);
    }
}

impl StrRuns for DictStrings<'_> {
    fn for_each_run(&self, f: &mut dyn FnMut(u64, Option<&[u8]>)) {
        let n = self.len();
        if n == 0 {
            return;
        }
        let (keys, values) = (self.keys(), self.values());
        let (k, knulls) = (keys.values(), keys.nulls());
        // A cell is NULL where its key is, or where the key points at a NULL value.
        let cell = |i: usize| -> Option<&[u8]> {
            if !valid(knulls, i) {
                return None;
            }
            let key = usize::try_from(k[i]).ok()?;
            (key < values.len() && values.is_valid(key)).then(|| values.value(key).as_bytes())
        };
        let key_of = |i: usize| (valid(knulls, i), k[i]);
        let (mut start, mut cur, mut cur_key) = (0, cell(0), key_of(0));
        for i in 1..n {
            let key = key_of(i);
            if key == cur_key {
                continue;
            }
            cur_key = key;
            let c = cell(i);
            if c != cur {
                f((i - start) as u64, cur);
                (start, cur) = (i, c);
            }
        }
        f((n - start) as u64, cur);
    }
}

/// One string column's stream: its runs, the last one still open.
#[derive(Debug, Clone)]
struct StrColumn {
    hash: blake3::Hasher,
    buf: Vec<u8>,
    /// The open run: its length (0: none yet), whether it holds a value, the value.
    count: u64,
    present: bool,
    value: Vec<u8>,
}

impl StrColumn {
    fn new() -> Self {
        StrColumn {
            hash: blake3::Hasher::new(),
            buf: Vec::with_capacity(RUN_BUF),
            count: 0,
            present: false,
            value: Vec::new(),
        }
    }

    fn push(&mut self, len: u64, cell: Option<&[u8]>) {
        if self.count > 0 && cell == self.present.then_some(self.value.as_slice()) {
            self.count += len;
            return;
        }
        self.close();
        self.count = len;
        self.present = cell.is_some();
        self.value.clear();
        self.value.extend_from_slice(cell.unwrap_or_default());
    }

    /// Writes the open run.
    fn close(&mut self) {
        if self.count == 0 {
            return;
        }
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf.push(u8::from(self.present));
        if self.present {
            self.buf
                .extend_from_slice(&(self.value.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&self.value);
        }
        self.count = 0;
        if self.buf.len() >= RUN_BUF {
            self.hash.update(&self.buf);
            self.buf.clear();
        }
    }

    fn finish(mut self, out: &mut blake3::Hasher) {
        self.close();
        self.hash.update(&self.buf);
        out.update(self.hash.finalize().as_bytes());
    }
}

/// One number column's two streams: presence runs and present values.
#[derive(Debug, Clone)]
struct NumColumn {
    runs: blake3::Hasher,
    values: blake3::Hasher,
    /// The open presence run: its length (0: none yet) and whether its cells are present.
    count: u64,
    present: bool,
}

impl NumColumn {
    fn new() -> Self {
        NumColumn {
            runs: blake3::Hasher::new(),
            values: blake3::Hasher::new(),
            count: 0,
            present: false,
        }
    }

    fn run(&mut self, len: usize, present: bool) {
        if len == 0 {
            return;
        }
        if self.count > 0 && self.present == present {
            self.count += len as u64;
            return;
        }
        self.close();
        (self.count, self.present) = (len as u64, present);
    }

    fn close(&mut self) {
        if self.count > 0 {
            let mut run = [0u8; 9];
            run[..8].copy_from_slice(&self.count.to_le_bytes());
            run[8] = u8::from(self.present);
            self.runs.update(&run);
            self.count = 0;
        }
    }

    fn push<T: ArrowPrimitiveType>(&mut self, col: &PrimitiveArray<T>) {
        let values = col.values();
        match col.nulls().filter(|n| n.null_count() > 0) {
            None => {
                self.values.update(values.to_byte_slice());
                self.run(values.len(), true);
            }
            Some(nulls) => {
                let mut at = 0;
                for (lo, hi) in nulls.valid_slices() {
                    self.run(lo - at, false);
                    self.run(hi - lo, true);
                    if let Some(v) = values.get(lo..hi) {
                        self.values.update(v.to_byte_slice());
                    }
                    at = hi;
                }
                self.run(values.len() - at, false);
            }
        }
    }

    fn finish(mut self, out: &mut blake3::Hasher) {
        self.close();
        out.update(self.runs.finalize().as_bytes());
        out.update(self.values.finalize().as_bytes());
    }
}

/// A column's stream.
#[derive(Debug, Clone)]
enum Column {
    Str(Box<StrColumn>),
    Num(Box<NumColumn>),
}

/// The running `blake3-col` checksum of a sequence of batches.
#[derive(Debug, Clone, Default)]
pub(super) struct Hashers {
    /// Per column in the archive's order; empty before the first batch.
    cols: Vec<Column>,
    rows: u64,
}

impl Hashers {
    /// Adds one batch's columns.
    ///
    /// # Errors
    /// [`Error::Verify`] when a batch has the provenance columns and an earlier one did not,
    /// or the other way round (one object is of one format version).
    pub(super) fn update<'a, S>(&mut self, c: &Columns<'a, S>) -> Result<()>
    where
        S: ArrayAccessor<Item = &'a str> + Array + StrRuns,
    {
        if c.ts.is_empty() {
            // Batches without rows add nothing: an object without rows hashes as no columns,
            // however many empty batches either side saw.
            return Ok(());
        }
        let width = if c.prov.is_some() { 14 } else { 7 };
        if self.cols.is_empty() {
            self.cols = (0..width)
                .map(|i| {
                    if STR_COLUMNS.contains(&i) {
                        Column::Str(Box::new(StrColumn::new()))
                    } else {
                        Column::Num(Box::new(NumColumn::new()))
                    }
                })
                .collect();
        } else if self.cols.len() != width {
            return Err(Error::Verify {
                object: "batch".into(),
                message: format!(
                    "a batch of {width} columns after batches of {}",
                    self.cols.len()
                ),
            });
        }
        self.strs(0, &c.pid);
        self.strs(1, &c.metric);
        self.nums(2, c.ts);
        self.nums(3, c.value);
        for (k, col) in c.opt.iter().enumerate() {
            self.strs(4 + k, col);
        }
        if let Some(p) = &c.prov {
            self.nums(7, p.utc_offset_min);
            self.nums(8, p.occurrence);
            self.nums(9, p.received_at);
            self.nums(10, p.received_at_type);
            self.strs(11, &p.src_topic);
            self.nums(12, p.src_partition);
            self.nums(13, p.src_offset);
        }
        self.rows += c.ts.len() as u64;
        Ok(())
    }

    /// Adds string column `i`'s runs.
    fn strs(&mut self, i: usize, col: &impl StrRuns) {
        if let Some(Column::Str(h)) = self.cols.get_mut(i) {
            col.for_each_run(&mut |len, cell| h.push(len, cell));
        }
    }

    /// Adds number column `i`'s presence runs and values.
    fn nums<T: ArrowPrimitiveType>(&mut self, i: usize, col: &PrimitiveArray<T>) {
        if let Some(Column::Num(h)) = self.cols.get_mut(i) {
            h.push(col);
        }
    }

    /// The checksum's 64 hex digits.
    pub(super) fn hex(self) -> String {
        let mut out = blake3::Hasher::new();
        out.update(DOMAIN);
        out.update(&(self.cols.len() as u32).to_le_bytes());
        out.update(&self.rows.to_le_bytes());
        for c in self.cols {
            match c {
                Column::Str(s) => (*s).finish(&mut out),
                Column::Num(n) => (*n).finish(&mut out),
            }
        }
        out.finalize().to_hex().to_string()
    }
}
