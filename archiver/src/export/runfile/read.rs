//! Reading a run back ([`RunReader`]), the other half of [`super`]'s encoding.

use std::io::Read;

use super::{prefix16, tail_cmp, RowRef, STRINGS};
use crate::error::{Error, Result};
use crate::export::prov::{Prov, FIXED};

/// Reads a run back one row at a time; the current row's fields stay readable until the
/// next [`Self::advance`].
#[derive(Debug)]
pub struct RunReader<R: Read> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    strs: [Option<String>; STRINGS],
    /// [`prefix16`] of participant_id and metric, for fast comparisons.
    pub(crate) keys: [u128; 2],
    /// ts of the current row, µs since the Unix epoch.
    pub ts: i64,
    /// `f64::to_bits` of the current row's value.
    pub value: u64,
    /// The current row's other provenance columns.
    pub prov: Prov,
    what: String,
}

/// Read buffer of a run reader, bytes.
const READ_BUF: usize = 64 << 10;

impl<R: Read> RunReader<R> {
    /// A reader of the run in `src`; `what` names it in errors. Call [`Self::advance`] for
    /// the first row.
    pub fn new(src: R, what: &str) -> Self {
        Self {
            src,
            buf: vec![0; READ_BUF],
            pos: 0,
            len: 0,
            strs: Default::default(),
            keys: [0; 2],
            ts: 0,
            value: 0,
            prov: Prov::default(),
            what: what.to_string(),
        }
    }

    fn bad(&self, message: &str) -> Error {
        Error::Copy {
            chunk: self.what.clone(),
            message: format!("sort run: {message}"),
        }
    }

    /// Makes at least `n` bytes available at `pos`; false at the end of the run.
    fn fill(&mut self, n: usize) -> Result<bool> {
        if self.len - self.pos >= n {
            return Ok(true);
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() < n {
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.len < n {
            let got = self.src.read(&mut self.buf[self.len..])?;
            if got == 0 {
                return Ok(false);
            }
            self.len += got;
        }
        Ok(true)
    }

    fn need(&mut self, n: usize) -> Result<()> {
        if self.fill(n)? {
            Ok(())
        } else {
            Err(self.bad("truncated row"))
        }
    }

    fn varint(&mut self) -> Result<u64> {
        // The usual case: the longest varint (10 bytes) is in the buffer, so no byte needs a
        // refill check.
        if let Some(b) = self
            .buf
            .get(self.pos..self.pos + 10)
            .filter(|_| self.pos + 10 <= self.len)
        {
            let mut x = 0u64;
            for (i, &b) in b.iter().enumerate() {
                x |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    self.pos += i + 1;
                    return Ok(x);
                }
            }
            return Err(self.bad("bad varint"));
        }
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            self.need(1)?;
            let b = self.buf[self.pos];
            self.pos += 1;
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(self.bad("bad varint"))
    }

    /// Moves to the next row; false at the end of the run.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Copy`] for a malformed run.
    pub fn advance(&mut self) -> Result<bool> {
        if !self.fill(1)? {
            return Ok(false);
        }
        let mask = self.buf[self.pos];
        self.pos += 1;
        for i in 0..STRINGS {
            if mask & (1 << i) == 0 {
                continue;
            }
            let n = self.varint()?;
            if n == 0 {
                self.strs[i] = None;
            } else {
                let n = usize::try_from(n - 1).map_err(|_| self.bad("bad length"))?;
                self.need(n)?;
                let bytes = &self.buf[self.pos..self.pos + n];
                let s = std::str::from_utf8(bytes).map_err(|_| self.bad("text is not UTF-8"))?;
                let slot = self.strs[i].get_or_insert_with(String::new);
                slot.clear();
                slot.push_str(s);
                self.pos += n;
            }
            if i < 2 {
                self.keys[i] = prefix16(self.strs[i].as_deref().unwrap_or("").as_bytes());
            }
        }
        self.need(16)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.ts = i64::from_le_bytes(w);
        w.copy_from_slice(&self.buf[self.pos + 8..self.pos + 16]);
        self.value = u64::from_le_bytes(w);
        self.pos += 16;
        self.need(1)?;
        let present = self.buf[self.pos];
        self.pos += 1;
        if present >> FIXED != 0 {
            return Err(self.bad("bad provenance mask"));
        }
        let mut prov = Prov::default();
        for k in 0..FIXED {
            if present & (1 << k) != 0 {
                let zz = self.varint()?;
                prov.set_run(k, zz, self.ts);
            }
        }
        self.prov = prov;
        Ok(true)
    }

    /// String column `i` of the current row (`None` for NULL).
    pub fn str(&self, i: usize) -> Option<&str> {
        self.strs[i].as_deref()
    }

    /// The current row.
    pub fn row(&self) -> RowRef<'_> {
        RowRef {
            strs: std::array::from_fn(|i| self.strs[i].as_deref().map(str::as_bytes)),
            ts: self.ts,
            value: self.value,
            prov: self.prov,
        }
    }

    /// (participant_id, metric, ts) byte order of the current rows of `self` and `other`.
    pub fn cmp_key<S: Read>(&self, other: &RunReader<S>) -> std::cmp::Ordering {
        fn s(r: &[Option<String>; STRINGS], i: usize) -> &[u8] {
            r[i].as_deref().unwrap_or("").as_bytes()
        }
        self.keys[0]
            .cmp(&other.keys[0])
            .then_with(|| tail_cmp(s(&self.strs, 0), s(&other.strs, 0)))
            .then(self.keys[1].cmp(&other.keys[1]))
            .then_with(|| tail_cmp(s(&self.strs, 1), s(&other.strs, 1)))
            .then(self.ts.cmp(&other.ts))
    }
}
