//! Publishing readings to the measurements topic: the reference producer.
//!
//! What a producer of the vitalsink contract (`schemas/README.md`) should do, and this one
//! does:
//! - **key** every record by `participant_id`, so one participant's readings stay in order on
//!   one partition;
//! - use the **batch form** (`samples`, one participant and one metric, at most
//!   [`MAX_BATCH_SAMPLES`] samples) for anything with more than a few readings, and keep each
//!   record within `validation.max_message_bytes` — larger ones are dead-lettered;
//! - an **idempotent producer** with `acks=all` (`enable.idempotence=true`), so broker
//!   retries neither lose nor duplicate nor reorder records;
//! - **timestamps** RFC 3339 UTC with microseconds (what the database stores), finite values.
//!
//! A failed delivery stops the run with the error (after librdkafka's own retries); records
//! already delivered stay delivered, so a rerun publishes them again (ingest writes every
//! record it receives: rerun into a fresh topic, or not at all).

use crate::error::{Error, Result};
use crate::mapping::Metric;
use crate::progress::Progress;
use crate::rebase::format_ts;
use futures::stream::{FuturesUnordered, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::time::Duration;
use vitalsink_common::config::KafkaConfig;
pub use vitalsink_common::measurement::MAX_BATCH_SAMPLES;

/// Bytes of a record value beyond which no sample is added (the contract's default
/// `validation.max_message_bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// How records are built and paced.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Measurements topic.
    pub topic: String,
    /// Samples per batch record, 1 to [`MAX_BATCH_SAMPLES`].
    pub batch_samples: usize,
    /// Largest record value, bytes (use the ingest workers' `validation.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Average readings per second over the run (`None`: as fast as the broker takes them).
    /// Bursts up to one batch record; records hold at most `rate` samples.
    pub rate: Option<NonZeroU32>,
    /// Records awaiting delivery before sending waits.
    pub in_flight: usize,
}

impl PublishOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Argument`] naming the option.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_BATCH_SAMPLES).contains(&self.batch_samples) {
            return Err(Error::Argument {
                name: "--batch-samples",
                detail: format!("{} not in 1..={MAX_BATCH_SAMPLES}", self.batch_samples),
            });
        }
        if self.max_message_bytes < 1024 {
            return Err(Error::Argument {
                name: "validation.max_message_bytes",
                detail: "below 1024 bytes".into(),
            });
        }
        if self.in_flight == 0 {
            return Err(Error::Argument {
                name: "--in-flight",
                detail: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

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
    fn prefix(&self) -> String {
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

/// An idempotent Kafka producer publishing batch records, paced by a rate limiter.
pub struct Publisher {
    producer: FutureProducer,
    opts: PublishOptions,
    limiter: Option<DefaultDirectRateLimiter>,
    pending: FuturesUnordered<Pending>,
    records: u64,
}

/// A record awaiting delivery; resolves to its number of readings.
type Pending = futures::future::BoxFuture<'static, Result<u64>>;

fn delivered(r: <DeliveryFuture as std::future::Future>::Output) -> Result<()> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(Error::Kafka(e)),
        Err(_) => Err(Error::Kafka(KafkaError::Canceled)),
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("opts", &self.opts)
            .field("records", &self.records)
            .finish()
    }
}

impl Publisher {
    /// A producer for `kafka` (brokers plus `kafka.properties`) with `acks=all`,
    /// `enable.idempotence=true`, `linger.ms=20` and `message.max.bytes` above
    /// `max_message_bytes`.
    ///
    /// # Errors
    /// [`Error::Argument`] for bad options, [`Error::Kafka`] when the client cannot be built.
    pub fn new(kafka: &KafkaConfig, opts: PublishOptions) -> Result<Self> {
        opts.validate()?;
        let producer: FutureProducer = vitalsink_common::kafka::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set(
                "message.max.bytes",
                (opts.max_message_bytes + 65_536).to_string(),
            )
            .create()?;
        // A token bucket whose burst is one record: the first second does not run ahead of
        // the rate. With a rate below the batch size, records shrink to `rate` samples.
        let mut opts = opts;
        let limiter = opts.rate.map(|r| {
            opts.batch_samples = opts.batch_samples.min(r.get() as usize);
            let burst = NonZeroU32::new(opts.batch_samples as u32).unwrap_or(r);
            RateLimiter::direct(Quota::per_second(r).allow_burst(burst))
        });
        Ok(Self {
            producer,
            opts,
            limiter,
            pending: FuturesUnordered::new(),
            records: 0,
        })
    }

    /// Records sent so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Publishes `samples` of one participant and metric as batch records, in order, counting
    /// delivered readings on `progress`.
    ///
    /// # Errors
    /// [`Error::Kafka`] when a record cannot be enqueued or delivered.
    pub async fn send_series(
        &mut self,
        header: &BatchHeader,
        samples: impl IntoIterator<Item = (i64, f64)>,
        progress: &mut Progress,
    ) -> Result<()> {
        let mut records: Vec<(String, usize)> = Vec::new();
        let mut it = samples.into_iter().peekable();
        // Encode a bounded window of records at a time, then send them (memory stays at
        // about one window whatever the length of the series).
        while it.peek().is_some() {
            records.clear();
            // The window ends between two instants, so that one instant stays in one record.
            let mut window: Vec<(i64, f64)> =
                it.by_ref().take(self.opts.batch_samples * 16).collect();
            while let (Some(last), Some(next)) = (window.last(), it.peek()) {
                if last.0 != next.0 {
                    break;
                }
                window.extend(it.next());
            }
            encode_batches(
                header,
                window,
                self.opts.batch_samples,
                self.opts.max_message_bytes,
                |json, n| {
                    records.push((json.to_string(), n));
                    Ok(())
                },
            )?;
            for (json, n) in &records {
                self.send_one(&header.participant_id, json, *n, progress)
                    .await?;
            }
        }
        Ok(())
    }

    async fn send_one(
        &mut self,
        key: &str,
        json: &str,
        n: usize,
        progress: &mut Progress,
    ) -> Result<()> {
        if let Some(l) = &self.limiter {
            let n = NonZeroU32::new(n as u32).unwrap_or(NonZeroU32::MIN);
            // n never exceeds the burst (batch_samples); wait in the same way if it did.
            if l.until_n_ready(n).await.is_err() {
                l.until_ready().await;
            }
        }
        while self.pending.len() >= self.opts.in_flight {
            self.settle_one(progress).await?;
        }
        loop {
            let record = FutureRecord::to(&self.opts.topic).key(key).payload(json);
            match self.producer.send_result(record) {
                Ok(fut) => {
                    let n = n as u64;
                    self.pending
                        .push(Box::pin(async move { delivered(fut.await).map(|()| n) }));
                    self.records += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        self.settle_one(progress).await?;
                    }
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        }
    }

    async fn settle_one(&mut self, progress: &mut Progress) -> Result<()> {
        if let Some(r) = self.pending.next().await {
            progress.inc(r?);
        }
        Ok(())
    }

    /// Waits until every record sent is delivered, then flushes the producer.
    ///
    /// # Errors
    /// The first delivery error.
    pub async fn flush(&mut self, progress: &mut Progress) -> Result<()> {
        while !self.pending.is_empty() {
            self.settle_one(progress).await?;
        }
        self.producer.flush(Duration::from_secs(60))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{for_each_recording, test_data};
    use crate::rebase::TimePlan;
    use vitalsink_common::measurement::{decode, Limits};

    /// Every real reading, encoded in batch records within a 64 KiB limit, decodes through the
    /// ingest gate to exactly the same participant, metric, timestamp and value bits.
    #[test]
    fn every_real_reading_survives_the_contract_decoder_exactly() {
        let now = chrono::Utc::now().timestamp_micros();
        let plan = TimePlan {
            native: false,
            end_at_micros: now,
        };
        let limits = Limits {
            max_message_bytes: 65_536,
            ..Limits::default()
        };
        let (mut readings, mut records, mut mismatched) = (0u64, 0u64, Vec::new());
        for_each_recording(&test_data::dir(), |mut rec| {
            plan.apply(&mut rec);
            for s in &rec.series {
                let header = BatchHeader {
                    participant_id: rec.participant_id.clone(),
                    metric: s.metric,
                    device_id: rec.device_id.clone(),
                    study_id: rec.study_id.clone(),
                };
                let mut want = s.samples.iter();
                let mut last_ts = None;
                encode_batches(
                    &header,
                    s.samples.iter().copied(),
                    1_000,
                    limits.max_message_bytes,
                    |json, n| {
                        assert!(json.len() <= limits.max_message_bytes && n <= MAX_BATCH_SAMPLES);
                        let got = decode(json.as_bytes(), &limits, now).expect("valid record");
                        assert_eq!(got.len(), n);
                        assert_ne!(
                            got.first().map(|r| r.ts_micros),
                            last_ts,
                            "an instant split between two records"
                        );
                        last_ts = got.last().map(|r| r.ts_micros);
                        for r in got {
                            let &(ts, v) = want.next().expect("no extra reading");
                            assert_eq!(
                                (r.participant_id.as_str(), r.metric.as_str(), r.ts_micros),
                                (rec.participant_id.as_str(), s.metric.name, ts)
                            );
                            assert_eq!(r.unit.as_deref(), Some(s.metric.unit));
                            if r.value.to_bits() != v.to_bits() {
                                mismatched.push((v, r.value));
                            }
                            readings += 1;
                        }
                        records += 1;
                        Ok(())
                    },
                )
                .unwrap();
                assert!(want.next().is_none(), "every reading encoded");
            }
            Ok(())
        })
        .unwrap();
        assert!(readings > 400_000, "{readings}");
        assert!(records * 1_000 >= readings);
        assert!(
            mismatched.is_empty(),
            "{} values change through JSON, e.g. {:?}",
            mismatched.len(),
            &mismatched[..mismatched.len().min(5)]
        );
    }

    #[test]
    fn one_instant_stays_in_one_record() {
        let header = BatchHeader {
            participant_id: "p1".into(),
            metric: crate::mapping::PPG,
            device_id: None,
            study_id: None,
        };
        // 10 samples per record asked; instants 0..=9 then six samples at instant 9.
        let samples: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 1_000, 1.0))
            .chain((0..6).map(|_| (9_000, 1.0)))
            .chain([(10_000, 2.0), (11_000, 2.0)])
            .collect();
        let mut sizes = Vec::new();
        encode_batches(&header, samples.clone(), 10, 65_536, |_, n| {
            sizes.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, [16, 2]);
        // Full by bytes in the middle of the run at instant 9: the record ends before the run.
        let one = {
            let mut s = String::new();
            push_sample(&mut s, 9_000, 1.0);
            s.len()
        };
        let limit = header.prefix().len() + 11 * (one + 1) + 2;
        let mut records = Vec::new();
        encode_batches(&header, samples.clone(), 100, limit, |json, n| {
            assert!(json.len() <= limit);
            records.push((n, json.matches("\"ts\"").count()));
            Ok(())
        })
        .unwrap();
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), [9, 9]);
        assert!(records.iter().all(|(n, ts)| n == ts));
    }

    #[test]
    fn batches_respect_both_limits() {
        let header = BatchHeader {
            participant_id: "p1".into(),
            metric: crate::mapping::PPG,
            device_id: None,
            study_id: None,
        };
        let samples = (0..2_500).map(|i| (i64::from(i) * 10_000, f64::from(i) * 0.5));
        let mut sizes = Vec::new();
        encode_batches(
            &header,
            samples.clone(),
            1_000,
            DEFAULT_MAX_MESSAGE_BYTES,
            |_, n| {
                sizes.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        sizes.clear();
        encode_batches(&header, samples, 10_000, 4_096, |json, n| {
            assert!(json.len() <= 4_096);
            sizes.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 2_500);
        assert!(sizes.len() > 2);
        let r = encode_batches(&header, [(0, 1.0)], 10, 40, |_, _| Ok(()));
        assert!(matches!(r, Err(Error::Argument { .. })));
    }
}
