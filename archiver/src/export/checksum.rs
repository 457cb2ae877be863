//! The content checksum of an archived chunk: SHA-256 over the rows in file order, each row
//! encoded canonically as
//!
//! ```text
//! participant_id: u32 LE byte length, UTF-8 bytes
//! metric:         u32 LE byte length, UTF-8 bytes
//! ts:             i64 LE, microseconds since 1970-01-01T00:00:00Z
//! value:          u64 LE, the IEEE 754 bits of the f64
//! unit, device_id, study_id: u8 0 for NULL, or u8 1, u32 LE byte length, UTF-8 bytes
//! ```
//!
//! written as `sha256:<64 hex digits>`. The export computes it from the batches built out of
//! the database's COPY stream before they are encoded; verification recomputes it from the
//! batches decoded out of the object read back. One function serves both, so any difference
//! is in the bytes stored, not in the code.

use arrow::array::{Array, RecordBatch};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// Running checksum, row count and ts range of a sequence of batches.
#[derive(Debug, Clone, Default)]
pub struct Digester {
    hasher: Sha256,
    scratch: Vec<u8>,
    /// Rows seen.
    pub rows: u64,
    /// Smallest `ts` seen, µs since the Unix epoch.
    pub min_ts: Option<i64>,
    /// Largest `ts` seen, µs since the Unix epoch.
    pub max_ts: Option<i64>,
}

/// What a finished [`Digester`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows.
    pub rows: u64,
    /// Smallest `ts`, µs since the Unix epoch (`None` when there are no rows).
    pub min_ts: Option<i64>,
    /// Largest `ts`, µs since the Unix epoch.
    pub max_ts: Option<i64>,
    /// `sha256:<hex>`.
    pub checksum: String,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Digester {
    /// Adds a batch of the archive schema ([`crate::export::format::schema`]).
    ///
    /// # Errors
    /// [`crate::Error::Verify`] when a column has another type than the schema's.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let crate::export::format::Columns {
            pid,
            metric,
            ts,
            value,
            opt,
        } = crate::export::format::Columns::of(batch, "batch")?;
        self.scratch.clear();
        for i in 0..batch.num_rows() {
            let out = &mut self.scratch;
            put_str(out, pid.value(i));
            put_str(out, metric.value(i));
            let t = ts.value(i);
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&value.value(i).to_bits().to_le_bytes());
            for col in opt {
                if col.is_null(i) {
                    out.push(0);
                } else {
                    out.push(1);
                    put_str(out, col.value(i));
                }
            }
            self.min_ts = Some(self.min_ts.map_or(t, |m| m.min(t)));
            self.max_ts = Some(self.max_ts.map_or(t, |m| m.max(t)));
        }
        self.hasher.update(&self.scratch);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The summary so far.
    pub fn finish(self) -> Summary {
        let digest = self.hasher.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Summary {
            rows: self.rows,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            checksum: format!("sha256:{hex}"),
        }
    }
}
