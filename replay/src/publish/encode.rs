//! Encoding a series as batch records: the JSON text of each record ([`BatchHeader`],
//! [`push_sample`]) and the cut into records within the sample and byte limits
//! ([`encode_batches`]).

use super::MAX_BATCH_SAMPLES;
use crate::error::{Error, Result};
use crate::mapping::Metric;
use crate::rebase::format_ts;
use std::fmt::Write as _;

/// The fields of a batch record other than its samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    /// Participant id, also the record key.
    pub participant_id: String,
    /// Metric and unit.
    pub metric: Metric,
    /// Device id, if any.
    pub device_id: Option<String>,
    /// Study id, if any.
    pub study_id: Option<String>,
}

impl BatchHeader {
    /// The JSON text of the record up to and including `"samples":[`.
    pub(super) fn prefix(&self) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = format!(
            "{{\"participant_id\":{},\"metric\":{},\"unit\":{}",
            q(&self.participant_id),
            q(self.metric.name),
            q(self.metric.unit)
        );
        if let Some(d) = &self.device_id {
            let _ = write!(out, ",\"device_id\":{}", q(d));
        }
        if let Some(s) = &self.study_id {
            let _ = write!(out, ",\"study_id\":{}", q(s));
        }
        out.push_str(",\"samples\":[");
        out
    }
}

/// Appends one sample `{"ts":"…","value":…}` to `out`. `value` must be finite; Rust's
/// shortest round-trip formatting is valid JSON for every finite `f64`.
pub fn push_sample(out: &mut String, ts_micros: i64, value: f64) {
    let _ = write!(
        out,
        "{{\"ts\":\"{}\",\"value\":{value}}}",
        format_ts(ts_micros)
    );
}

/// Splits samples into batch record values of at most `batch_samples` samples and
/// `max_message_bytes` bytes each, calling `emit(json, samples)` per record.
///
/// Samples of one instant stay in one record: a record ends before a run of samples of one
/// instant rather than inside it, whether the record is full by samples or by bytes (a record
/// may then hold fewer samples than it could, or more than `batch_samples` up to
/// [`MAX_BATCH_SAMPLES`]); only a run longer than a whole record is split. A reading's identity
/// counts equal readings within a record, and two records that each hold the same reading are
/// taken as a resend (schemas/README.md, "Identity"). heartpy's `data3.csv` repeats its timer,
/// with the same value 815 times.
///
/// # Errors
/// [`Error::Argument`] when a single sample does not fit into `max_message_bytes`; any error
/// of `emit`.
pub fn encode_batches<F>(
    header: &BatchHeader,
    samples: impl IntoIterator<Item = (i64, f64)>,
    batch_samples: usize,
    max_message_bytes: usize,
    mut emit: F,
) -> Result<()>
where
    F: FnMut(&str, usize) -> Result<()>,
{
    let prefix = header.prefix();
    let mut buf = prefix.clone();
    let mut n = 0;
    let mut sample = String::new();
    let mut last_ts = None;
    // Where the current run of samples of one instant starts in `buf` (bytes, after its comma)
    // and how many samples of the record come before it.
    let (mut run_at, mut run_n) = (prefix.len(), 0);
    for (ts, v) in samples {
        sample.clear();
        push_sample(&mut sample, ts, v);
        let same_instant = last_ts == Some(ts);
        last_ts = Some(ts);
        if !same_instant {
            (run_at, run_n) = (buf.len() + usize::from(n > 0), n);
        }
        // +1 for the comma, +2 for the closing "]}".
        let too_big = |buf: &String| buf.len() + 1 + sample.len() + 2 > max_message_bytes;
        let full = n >= MAX_BATCH_SAMPLES || (n >= batch_samples && !same_instant);
        if n > 0 && (too_big(&buf) || full) {
            if same_instant && run_n > 0 {
                // Cut before the run, which moves to the next record whole.
                let carried = buf.split_off(run_at);
                buf.truncate(run_at - 1);
                buf.push_str("]}");
                emit(&buf, run_n)?;
                buf.truncate(prefix.len());
                buf.push_str(&carried);
                n -= run_n;
                (run_at, run_n) = (prefix.len(), 0);
            }
            let full = n >= MAX_BATCH_SAMPLES || (n >= batch_samples && !same_instant);
            if n > 0 && (too_big(&buf) || full) {
                // A full record; or one instant's samples beyond one record, which have to be
                // split.
                buf.push_str("]}");
                emit(&buf, n)?;
                buf.truncate(prefix.len());
                n = 0;
                (run_at, run_n) = (prefix.len(), 0);
            }
        }
        if n > 0 {
            buf.push(',');
        }
        buf.push_str(&sample);
        n += 1;
        if n == 1 && buf.len() + 2 > max_message_bytes {
            return Err(Error::Argument {
                name: "validation.max_message_bytes",
                detail: format!("{max_message_bytes} bytes cannot hold one sample"),
            });
        }
    }
    if n > 0 {
        buf.push_str("]}");
        emit(&buf, n)?;
    }
    Ok(())
}
