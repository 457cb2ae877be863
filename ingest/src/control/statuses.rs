//! Following the participants' statuses (`participant_status`, `common/src/participants.rs`)
//! while the worker runs.
//!
//! - **At start** every shard's table is read ([`load_all`]) before the first record, so the
//!   pipeline decides by the current tables from the start.
//! - **Every [`REFRESH`]** ([`spawn_status_watch`]) each shard's version is read, and a
//!   changed table is read whole and handed to the consume loop ([`Refreshed`]), which
//!   decides that shard's readings by it from then on ([`Pipeline::set_consent`]). This keeps
//!   the pipeline's filter current, so batches seldom go stale; it is not what makes a change
//!   exact.
//! - **Exactness** is the writer's check in the committing transaction
//!   ([`crate::data::guard`]): a batch decided by an older table that decides one of its
//!   participants otherwise is rolled back, and the consume loop **rewinds**
//!   ([`Control::rewind`]): it drops everything consumed and not committed (buffers, batches of
//!   that generation still queued), takes the table the writer read, and positions every
//!   assigned partition where the shards resume it ([`resume_offsets`], as an assignment
//!   does), so those records are decided again. Nothing committed is undone: each shard skips
//!   what it applied. Dead letters of records consumed again may be published twice (at least
//!   once, as after a crash).
//!
//! So once `trial participants withdraw` has returned, no batch a worker commits stores a
//! reading it refuses, and each worker's filter follows within [`REFRESH`] plus one read.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::participants;
use vitalsink_common::retry::{Backoff, Class};

use crate::control::fleet::{snapshot, with_retry, LiveShards};
use crate::control::follow::Control;
use crate::control::rebalance::IngestContext;
use crate::data::consent::Consent;
use crate::data::guard::Stale;
use crate::data::offsets::resume_offsets;
use crate::data::pipeline::Pipeline;
use crate::fatal::Fatal;

/// How often a running worker reads each shard's `participant_status` version.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long one seek may wait for the consumer to reposition a partition.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// A shard's table changed: decide its readings by `consent` from now on.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The shard's name.
    pub shard: String,
    /// Its table.
    pub consent: Arc<Consent>,
}

/// One shard's table.
async fn load(shard: &Shard) -> vitalsink_common::Result<Consent> {
    let c = shard.client().await?;
    Consent::load(&**c).await.map_err(|e| shard.err(e))
}

/// Every shard's table, in order, retrying transient errors; `None` when `stop` is cancelled
/// meanwhile or an error is permanent (raised to `fatal`, e.g. the ingest role without
/// `SELECT` on `participant_status`).
pub async fn load_all(
    shards: &[Shard],
    backoff: Backoff,
    stop: &CancellationToken,
    fatal: &Fatal,
) -> Option<Vec<Arc<Consent>>> {
    let mut out = Vec::with_capacity(shards.len());
    for s in shards {
        let c = with_retry("statuses", backoff, stop, fatal, || load(s)).await?;
        crate::metrics::statuses_version(&s.name, c.version());
        out.push(Arc::new(c));
    }
    Some(out)
}

/// Reads every live shard's version every [`REFRESH`] and sends a changed table to the
/// consume loop. `known` is the version of each shard's table the pipeline starts with. A
/// transient error skips the shard for the round (the shard probe reports outages); a
/// permanent one stops the worker.
pub fn spawn_status_watch(
    live: LiveShards,
    known: HashMap<String, i64>,
    tx: mpsc::UnboundedSender<Refreshed>,
    fatal: Fatal,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut known = known;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            for s in snapshot(&live) {
                let res = async {
                    let c = s.client().await?;
                    participants::version(&**c).await.map_err(|e| s.err(e))
                }
                .await;
                let version = match res {
                    Ok(v) => v,
                    Err(e) if e.class() == Class::Permanent => {
                        fatal.raise("statuses", &e.kind(), &e);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(shard = %s.name, error = %e, "participant_status not read this round");
                        continue;
                    }
                };
                if known.get(&s.name) == Some(&version) {
                    continue;
                }
                match load(&s).await {
                    Ok(c) => {
                        known.insert(s.name.clone(), c.version());
                        let r = Refreshed {
                            shard: s.name.clone(),
                            consent: Arc::new(c),
                        };
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.class() == Class::Permanent => {
                        fatal.raise("statuses", &e.kind(), &e);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(shard = %s.name, error = %e, "participant_status not read this round");
                    }
                }
            }
        }
    });
}

impl Control {
    /// Handles a writer's report of a stale batch: takes the table it read and, unless the
    /// pipeline rewound since that batch was cut, rewinds (see the module doc). Call only
    /// when no dead letter is pending.
    pub async fn rewind(
        &mut self,
        stale: Stale,
        pipeline: &mut Pipeline,
        consumer: &StreamConsumer<IngestContext>,
    ) {
        if stale.generation < pipeline.generation() {
            // Everything after that batch was dropped already; only its table is news.
            pipeline
                .set_consent(&stale.shard, stale.consent, true)
                .await;
            return;
        }
        let generation = pipeline.rewind();
        pipeline
            .set_consent(&stale.shard, stale.consent, true)
            .await;
        crate::metrics::rewound();
        let partitions = pipeline.assigned();
        if partitions.is_empty() {
            return;
        }
        let live = snapshot(&self.fleet.live);
        let (group, topic) = (self.group.clone(), self.topic.clone());
        let Some(offsets) = with_retry("rewind", self.backoff, &self.stop, &self.fatal, || {
            resume_offsets(&live, &group, &topic, &partitions)
        })
        .await
        else {
            return;
        };
        tracing::info!(generation, shard = %stale.shard, offsets = ?offsets, "rewinding: records not committed are consumed again and decided by the shards' participant_status");
        seek(consumer, &self.topic, offsets, self.backoff, &self.stop).await;
    }
}

/// Positions each partition of `offsets` there, retrying until the consumer confirms or
/// `stop`. A partition the consumer no longer fetches (revoked meanwhile) is left: its next
/// owner resumes it where the shards stand.
async fn seek(
    consumer: &StreamConsumer<IngestContext>,
    topic: &str,
    mut offsets: BTreeMap<i32, Offset>,
    backoff: Backoff,
    stop: &CancellationToken,
) {
    let mut attempt = 0u32;
    while !offsets.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &offsets {
            if let Err(e) = tpl.add_partition_offset(topic, p, o) {
                tracing::error!(partition = p, error = %e, "cannot set a seek offset");
            }
        }
        // Waits for the fetcher (at most SEEK_TIMEOUT): no record fetched before is passed on.
        match tokio::task::block_in_place(|| consumer.seek_partitions(tpl, SEEK_TIMEOUT)) {
            Ok(done) => {
                for e in done.elements() {
                    match e.error() {
                        Ok(()) => {
                            offsets.remove(&e.partition());
                        }
                        Err(KafkaError::OffsetFetch(
                            RDKafkaErrorCode::UnknownPartition
                            | RDKafkaErrorCode::State
                            | RDKafkaErrorCode::PreviousInProgress,
                        )) => {
                            tracing::info!(
                                partition = e.partition(),
                                "partition no longer fetched by this worker; not repositioned"
                            );
                            offsets.remove(&e.partition());
                        }
                        Err(err) => {
                            tracing::warn!(partition = e.partition(), error = %err, "seek failed; retrying");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "seek failed; retrying"),
        }
        if offsets.is_empty() {
            return;
        }
        attempt += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.delay(attempt).max(Duration::from_millis(50))) => {}
        }
    }
}
