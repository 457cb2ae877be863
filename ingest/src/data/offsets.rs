//! Where to resume a partition on assignment: the shards, not Kafka, know what was applied.
//!
//! Each shard records per (group, topic, partition) the next offset it has applied. A
//! partition resumes at the **lowest** of these over all shards; rows the other shards
//! already have are skipped by the writer. If any shard has no record of the partition (it
//! never applied a batch of it), the partition resumes at its beginning, since that shard's
//! rows could be anywhere in it.

use rdkafka::Offset;
use std::collections::BTreeMap;
use vitalsink_common::db::Shard;

/// The offset to resume each of `partitions` at.
///
/// # Errors
/// The first shard that cannot be read; the caller retries.
pub async fn resume_offsets(
    shards: &[Shard],
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> vitalsink_common::Result<BTreeMap<i32, Offset>> {
    let mut per_shard = Vec::with_capacity(shards.len());
    for s in shards {
        let c = s.client().await?;
        let rows = c
            .query(
                "SELECT kafka_partition, next_offset FROM ingest_offsets
                 WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = ANY($3)",
                &[&group, &topic, &partitions],
            )
            .await
            .map_err(|e| s.err(e))?;
        per_shard.push(
            rows.iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
                .collect::<BTreeMap<_, _>>(),
        );
    }
    Ok(partitions
        .iter()
        .map(|&p| (p, lowest(&per_shard, p)))
        .collect())
}

fn lowest(per_shard: &[BTreeMap<i32, i64>], p: i32) -> Offset {
    let mut low: Option<i64> = None;
    for m in per_shard {
        match m.get(&p) {
            Some(&o) => low = Some(low.map_or(o, |l| l.min(o))),
            None => return Offset::Beginning,
        }
    }
    low.map_or(Offset::Beginning, Offset::Offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn lowest_over_shards_or_beginning() {
        let a: BTreeMap<i32, i64> = [(0, 100), (1, 7)].into();
        let b: BTreeMap<i32, i64> = [(0, 80)].into();
        assert_eq!(lowest(&[a.clone(), b.clone()], 0), Offset::Offset(80));
        assert_eq!(
            lowest(&[a, b], 1),
            Offset::Beginning,
            "shard b never applied partition 1"
        );
        assert_eq!(lowest(&[], 0), Offset::Beginning);
    }
}
