//! A known data set for the ingest tests: readings of many participants in both message
//! forms, with malformed records of every rejection kind mixed in, and the per-participant
//! counts and sums any correct pipeline must end with.

use std::collections::BTreeMap;
use vitalsink_common::measurement::RejectReason;

/// One record to publish.
#[derive(Debug, Clone)]
pub struct Record {
    /// Record key (the participant id; arbitrary for some malformed records).
    pub key: String,
    /// Record value.
    pub payload: Vec<u8>,
    /// `Some(reason)` when the record is malformed and must be dead-lettered with that reason.
    pub rejected: Option<RejectReason>,
}

/// Per participant: number of readings and sum of their values.
pub type Totals = BTreeMap<String, (i64, f64)>;

/// The data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Records in publishing order.
    pub records: Vec<Record>,
    /// What the database must hold.
    pub expected: Totals,
    /// Total valid readings.
    pub readings: i64,
}

fn ts(base_ms: i64, offset_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(base_ms + offset_ms).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `participants` participants, each with `singles` single readings (heart rate) and
/// `batches` batch records of `samples` samples (PPG), timestamps in the 3 days before
/// `now_ms`; plus `malformed_per_kind` malformed records of each of 8 kinds (and [`OVERSIZE_RECORDS`] oversize ones), spread evenly.
///
/// Values are multiples of 0.25 below 1000, so sums are exact in `float8`.
pub fn generate(
    participants: usize,
    singles: usize,
    batches: usize,
    samples: usize,
    malformed_per_kind: usize,
    now_ms: i64,
) -> Dataset {
    let base = now_ms - 3 * 86_400_000;
    let mut records = Vec::new();
    let mut expected = Totals::new();
    let mut readings = 0i64;
    let value = |i: usize| (i % 4000) as f64 * 0.25;
    for p in 0..participants {
        let pid = format!("P{p:05}");
        let mut n = 0i64;
        let mut sum = 0.0;
        for k in 0..singles {
            let v = value(p * 31 + k);
            let json = format!(
                r#"{{"participant_id":"{pid}","metric":"heart_rate","ts":"{}","value":{v},"unit":"/min","device_id":"W-{}"}}"#,
                ts(base, (k as i64) * 60_000 + p as i64),
                p % 17
            );
            records.push(Record {
                key: pid.clone(),
                payload: json.into_bytes(),
                rejected: None,
            });
            n += 1;
            sum += v;
        }
        for b in 0..batches {
            let start = (b as i64) * 3_600_000 + p as i64;
            let body: Vec<String> = (0..samples)
                .map(|s| {
                    let v = value(p * 7 + b * 1000 + s);
                    sum += v;
                    format!(
                        r#"{{"ts":"{}","value":{v}}}"#,
                        ts(base, start + (s as i64) * 10)
                    )
                })
                .collect();
            n += samples as i64;
            let json = format!(
                r#"{{"participant_id":"{pid}","metric":"ppg","unit":"mV","samples":[{}]}}"#,
                body.join(",")
            );
            records.push(Record {
                key: pid.clone(),
                payload: json.into_bytes(),
                rejected: None,
            });
        }
        readings += n;
        expected.insert(pid, (n, sum));
    }
    // Interleave the malformed records evenly.
    let good = records.len();
    let bad = malformed(malformed_per_kind, now_ms);
    let step = (good / bad.len().max(1)).max(1);
    let mut out = Vec::with_capacity(good + bad.len());
    let mut bad_iter = bad.into_iter();
    for (i, r) in records.into_iter().enumerate() {
        out.push(r);
        if i % step == step - 1 {
            if let Some(b) = bad_iter.next() {
                out.push(b);
            }
        }
    }
    out.extend(bad_iter);
    Dataset {
        records: out,
        expected,
        readings,
    }
}

/// Oversize records in the data set (each twice [`OVERSIZE_LIMIT_BYTES`]).
pub const OVERSIZE_RECORDS: usize = 3;
/// The `validation.max_message_bytes` the tests run the worker with.
pub const OVERSIZE_LIMIT_BYTES: usize = 65_536;

fn malformed(per_kind: usize, now_ms: i64) -> Vec<Record> {
    let ok_ts = ts(now_ms - 86_400_000, 0);
    let mut v = Vec::new();
    for i in 0..per_kind {
        let pid = format!("BAD{i:04}");
        let mk = |payload: Vec<u8>, reason| Record {
            key: pid.clone(),
            payload,
            rejected: Some(reason),
        };
        v.push(mk(
            format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"{ok_ts}","value":1"#)
                .into_bytes(),
            RejectReason::InvalidJson,
        ));
        let mut latin1 = format!(
            r#"{{"participant_id":"{pid}","metric":"hr","ts":"{ok_ts}","value":1,"unit":"X"}}"#
        )
        .into_bytes();
        let pos = latin1.len() - 3;
        latin1[pos] = 0xff;
        v.push(mk(latin1, RejectReason::InvalidUtf8));
        v.push(mk(
            format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"{ok_ts}"}}"#).into_bytes(),
            RejectReason::Schema,
        ));
        v.push(mk(
            format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"{ok_ts}","value":"72"}}"#)
                .into_bytes(),
            RejectReason::Schema,
        ));
        v.push(mk(
            format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"{ok_ts}","value":1e999}}"#)
                .into_bytes(),
            RejectReason::NonFiniteValue,
        ));
        v.push(mk(format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"1971-01-01T00:00:00Z","value":1}}"#).into_bytes(), RejectReason::TsOutOfWindow));
        v.push(mk(
            format!(r#"{{"participant_id":"{pid} x","metric":"hr","ts":"{ok_ts}","value":1}}"#)
                .into_bytes(),
            RejectReason::InvalidId,
        ));
        v.push(mk(
            format!(r#"{{"participant_id":"{pid}","metric":"hr","ts":"yesterday","value":1}}"#)
                .into_bytes(),
            RejectReason::InvalidTs,
        ));
        if i < OVERSIZE_RECORDS {
            let big = "1,".repeat(OVERSIZE_LIMIT_BYTES);
            v.push(mk(
                format!(r#"{{"participant_id":"{pid}","metric":"hr","pad":[{big}1]}}"#)
                    .into_bytes(),
                RejectReason::Oversize,
            ));
        }
    }
    v
}
