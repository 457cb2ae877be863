//! The shards' `ingest_offsets` around a move: phase 1's check that they agree (offline),
//! and an added shard's offsets (seeded online, copied at an offline switch).

use std::collections::BTreeMap;
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};
use crate::plan::Change;

/// A shard's `ingest_offsets`: (group, topic, partition) → next offset.
async fn shard_offsets(s: &Shard) -> Result<Vec<((String, String, i32), i64)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT consumer_group, topic, kafka_partition, next_offset FROM ingest_offsets",
            &[],
        )
        .await
        .map_err(|e| s.err(e))?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
        .collect())
}

/// Phase 1's check: every `ingest_offsets` key has one offset on every shard.
pub(super) async fn offsets_agree(shards: &[Shard], change: &Change) -> Result<()> {
    let mut seen: BTreeMap<(String, String, i32), Vec<(String, i64)>> = BTreeMap::new();
    for s in shards {
        for (key, o) in shard_offsets(s).await? {
            seen.entry(key).or_default().push((s.name.clone(), o));
        }
    }
    let bad: Vec<String> = seen
        .iter()
        .filter(|(_, v)| v.len() != shards.len() || v.iter().any(|(_, o)| *o != v[0].1))
        .take(5)
        .map(|((g, t, p), v)| format!("group {g} topic {t} partition {p}: {v:?}"))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::Refused {
        action: change.action(),
        message: format!(
            "the shards' ingest offsets disagree, so the workers did not stop cleanly (or still \
             run): {}. Start a worker and stop it with SIGTERM (it flushes every shard to the \
             same offsets), then run this again",
            bad.join("; ")
        ),
    })
}

/// Start of an online addition: the new shard gets, per partition, the lowest offset the
/// old shards have applied. Nothing below it can route to the new shard (its cut-over comes
/// later), so a partition resumes no lower than it would without the new shard.
pub(super) async fn seed_offsets(old: &[Shard], new: &Shard) -> Result<()> {
    let mut low: BTreeMap<(String, String, i32), (i64, usize)> = BTreeMap::new();
    for s in old {
        for (key, o) in shard_offsets(s).await? {
            let e = low.entry(key).or_insert((i64::MAX, 0));
            e.0 = e.0.min(o);
            e.1 += 1;
        }
    }
    let n = new.client().await?;
    for ((g, t, p), (o, seen)) in low {
        // A partition some old shard never applied resumes at its beginning anyway.
        if seen < old.len() {
            continue;
        }
        n.execute(
            "INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&g, &t, &p, &o],
        )
        .await
        .map_err(|e| new.err(e))?;
    }
    Ok(())
}

/// Phase 3 of an addition: the new shard resumes every partition where the others do.
pub(super) async fn copy_offsets(old: &[Shard], new: &Shard) -> Result<()> {
    let Some(first) = old.first() else {
        return Ok(());
    };
    let n = new.client().await?;
    for ((g, t, p), o) in shard_offsets(first).await? {
        n.execute(
            "INSERT INTO ingest_offsets (consumer_group, topic, kafka_partition, next_offset)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer_group, topic, kafka_partition)
             DO UPDATE SET next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset)",
            &[&g, &t, &p, &o],
        )
        .await
        .map_err(|e| new.err(e))?;
    }
    Ok(())
}
