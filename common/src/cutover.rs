//! Cut-over points of online shard moves: where in each Kafka partition routing switches
//! from a move's starting epoch to its target epoch.
//!
//! `reshard` publishes one **cut-over control record** into every partition of the
//! measurements topic once the target epoch is in the shard map. A control record has the
//! header [`CONTROL_HEADER`] = [`CONTROL_CUTOVER`] and [`EPOCH_HEADER`] = the target epoch
//! (decimal); its value is a small JSON object for people reading the topic, never decoded as
//! a measurement. The **first** such record of an epoch in a partition is that partition's
//! cut-over: records at or below its offset route by the starting epoch, records above it by
//! the target epoch (`schemas/ROUTING.md`). Kafka keeps a partition's order, so every consumer
//! meets that first record first, and the worker that consumes it stores its offset
//! ([`record`], table `shard_cutovers` on the map shard) **before** it handles any later
//! record of the partition. So a partition whose shards have applied anything above its
//! cut-over always has the cut-over stored, and a replay after a crash — by the same worker
//! or another owner after a rebalance — routes every record exactly as the first attempt did.
//! A duplicate control record (a `reshard` resumed after a kill publishes again where no
//! cut-over is stored yet) lies above the first and changes nothing.

use std::collections::BTreeMap;

use crate::db::Shard;
use crate::error::Result;

/// Header naming a control record's kind.
pub const CONTROL_HEADER: &str = "vitalsink.control";
/// [`CONTROL_HEADER`]'s value for a cut-over record.
pub const CONTROL_CUTOVER: &str = "cutover";
/// Header with the epoch a cut-over record switches to, in decimal.
pub const EPOCH_HEADER: &str = "vitalsink.epoch";
/// Header with the shard move's id, in decimal (for people reading the topic).
pub const MOVE_HEADER: &str = "vitalsink.move";

/// Stores that `partition` of `topic` cuts over to `epoch` at `offset`, unless a cut-over is
/// stored already; returns the stored offset (the first control record's, see the module
/// documentation).
///
/// # Errors
/// Database errors of the map shard.
pub async fn record(
    map_shard: &Shard,
    topic: &str,
    partition: i32,
    epoch: i32,
    offset: i64,
) -> Result<i64> {
    let c = map_shard.client().await?;
    c.execute(
        "INSERT INTO shard_cutovers (topic, kafka_partition, epoch, cutover_offset)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&topic, &partition, &epoch, &offset],
    )
    .await
    .map_err(|e| map_shard.err(e))?;
    let r = c
        .query_one(
            "SELECT cutover_offset FROM shard_cutovers
              WHERE topic = $1 AND kafka_partition = $2 AND epoch = $3",
            &[&topic, &partition, &epoch],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(r.get(0))
}

/// Every stored cut-over of `topic` to `epoch`: partition → offset.
///
/// # Errors
/// Database errors of the map shard.
pub async fn load(map_shard: &Shard, topic: &str, epoch: i32) -> Result<BTreeMap<i32, i64>> {
    let c = map_shard.client().await?;
    let rows = c
        .query(
            "SELECT kafka_partition, cutover_offset FROM shard_cutovers
              WHERE topic = $1 AND epoch = $2",
            &[&topic, &epoch],
        )
        .await
        .map_err(|e| map_shard.err(e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
