//! The consumer's rebalance handling.
//!
//! On **assignment** the worker does not trust Kafka's committed offsets: it asks every shard
//! where it stands ([`crate::data::offsets::resume_offsets`]) and assigns each partition at
//! that offset. This blocks the rebalance until the shards answer (retrying with backoff),
//! which is right: consuming before knowing where to resume could lose rows. A permanent
//! error (the `ingest_offsets` table missing, permission denied) is raised ([`crate::fatal`])
//! instead of retried, and so is shutdown: in both cases nothing is assigned, so nothing is
//! consumed.
//!
//! Before that it reads the shard map ([`vitalsink_common::shardmap::routing`]) and the
//! stored cut-overs of a move in progress, and hands them to the consume loop ahead of the
//! assignment ([`Assignment::Routing`]): resume offsets are taken over every shard a record
//! may have gone to (a shard a move is adding included, though this worker may not have
//! written to it yet), and records of a partition past its cut-over route by the move's
//! target epoch from the first one consumed.
//!
//! On **revocation** nothing has to be undone: batches already cut for a revoked partition
//! still commit (the shard's offset lock skips whatever the new owner applied first), and the
//! new owner skips whatever they applied. The consumer is told, so that later batches stop
//! claiming progress on partitions it no longer owns.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use vitalsink_common::db::Shard;
use vitalsink_common::retry::{Backoff, Class};
use vitalsink_common::shardmap::Routing;

use crate::control::fleet::{snapshot, LiveShards, Resolver};
use crate::data::offsets::resume_offsets;
use crate::fatal::Fatal;

/// The shard map as read for an assignment (or by the map watch): what to route by, the
/// shards of its union list, and the stored cut-overs of the pending epoch.
#[derive(Debug, Clone)]
pub struct Fresh {
    /// What to route by.
    pub routing: Routing,
    /// Its union list's shards.
    pub shards: Vec<Shard>,
    /// Partition → cut-over offset to the pending epoch (empty without a move).
    pub cutovers: BTreeMap<i32, i64>,
}

/// Reads [`Fresh`] from the map shard (`live[0]`).
///
/// # Errors
/// Database errors; [`vitalsink_common::Error::ShardMap`] as
/// [`vitalsink_common::shardmap::routing`] and [`Resolver::resolve`].
pub async fn read_fresh(
    live: &[Shard],
    resolver: &Resolver,
    topic: &str,
) -> vitalsink_common::Result<Fresh> {
    let Some(map_shard) = live.first() else {
        return Err(vitalsink_common::Error::ShardMap("no shards".into()));
    };
    let routing = vitalsink_common::shardmap::routing(map_shard).await?;
    let shards = resolver.resolve(&routing, live)?;
    let cutovers = match routing.pending.as_ref() {
        Some(m) => vitalsink_common::cutover::load(map_shard, topic, m.to.epoch).await?,
        None => BTreeMap::new(),
    };
    Ok(Fresh {
        routing,
        shards,
        cutovers,
    })
}

/// A change of assignment, for the consume loop.
#[derive(Debug, Clone)]
pub enum Assignment {
    /// The shard map as it is now: applied before the assignment that follows it.
    Routing(Box<Fresh>),
    /// These partitions are now ours, positioned where the shards resume them.
    Assigned(Vec<i32>),
    /// These partitions are no longer ours.
    Revoked(Vec<i32>),
}

/// librdkafka callbacks of the ingest consumer.
pub struct IngestContext {
    /// The shards written now (the first is the map shard).
    pub live: LiveShards,
    /// Builds the shards of a routing read at assignment.
    pub resolver: Arc<Resolver>,
    /// Consumer group.
    pub group: String,
    /// The measurements topic.
    pub topic: String,
    /// Retry delays while a shard cannot answer.
    pub backoff: Backoff,
    /// Runtime to run the shard queries on from the callback.
    pub runtime: tokio::runtime::Handle,
    /// Where assignment changes go.
    pub events: UnboundedSender<Assignment>,
    /// Ends the retries when the worker stops.
    pub shutdown: CancellationToken,
    /// Where a permanent error is raised.
    pub fatal: Fatal,
}

impl IngestContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    /// Sets each partition of `tpl` to where the shards resume it, retrying transient errors
    /// until they answer. `false` when it gave up (shutdown or a permanent error): then
    /// nothing may be assigned.
    fn position(&self, tpl: &mut TopicPartitionList) -> bool {
        let partitions = self.partitions(tpl);
        // The callback runs on a runtime worker thread (inside `recv`): the whole wait,
        // retries included, happens in block_in_place so the writers keep running.
        let offsets = tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                let mut attempt = 0u32;
                loop {
                    let res = async {
                        let fresh = read_fresh(&snapshot(&self.live), &self.resolver, &self.topic).await?;
                        let o = resume_offsets(&fresh.shards, &self.group, &self.topic, &partitions).await?;
                        Ok::<_, vitalsink_common::Error>((fresh, o))
                    };
                    match res.await {
                        Ok(o) => break Some(o),
                        Err(e) if e.class() == Class::Permanent => {
                            self.fatal.raise("resume", &e.kind(), &e);
                            break None;
                        }
                        Err(e) => {
                            attempt += 1;
                            tracing::warn!(error = %e, attempt, "cannot read resume offsets from the shards; retrying");
                            tokio::select! {
                                _ = self.shutdown.cancelled() => break None,
                                _ = tokio::time::sleep(self.backoff.delay(attempt)) => {}
                            }
                        }
                    }
                }
            })
        });
        let Some((fresh, offsets)) = offsets else {
            return false;
        };
        let _ = self.events.send(Assignment::Routing(Box::new(fresh)));
        for (p, o) in offsets {
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, o) {
                tracing::error!(partition = p, error = %e, "cannot set resume offset");
            }
            tracing::info!(partition = p, offset = ?o, "partition assigned");
        }
        true
    }
}

impl ClientContext for IngestContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, s) in &t.partitions {
                if *p >= 0 && s.consumer_lag >= 0 {
                    crate::metrics::consumer_lag(*p, s.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let res: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Resume offsets set, then refuse any Kafka no longer holds (retention).
                if self.position(tpl)
                    && crate::control::retention::covered(
                        consumer,
                        tpl,
                        self.backoff,
                        &self.shutdown,
                        &self.fatal,
                    )
                {
                    let r = consumer.assign(tpl);
                    let _ = self.events.send(Assignment::Assigned(self.partitions(tpl)));
                    r
                } else {
                    tracing::warn!("partitions not taken: the worker is stopping");
                    consumer.unassign()
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = self.events.send(Assignment::Revoked(self.partitions(tpl)));
                tracing::info!(partitions = ?self.partitions(tpl), "partitions revoked");
                consumer.unassign()
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "applying the rebalance failed");
        }
    }
}
