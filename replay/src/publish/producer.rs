//! The Kafka side of publishing: [`Publisher`], an idempotent producer that sends a
//! series' batch records paced by a rate limiter, with a bounded number awaiting delivery.

use super::{encode_batches, BatchHeader, PublishOptions};
use crate::error::{Error, Result};
use crate::progress::Progress;
use futures::stream::{FuturesUnordered, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::num::NonZeroU32;
use std::time::Duration;
use vitalsink_common::config::KafkaConfig;

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
