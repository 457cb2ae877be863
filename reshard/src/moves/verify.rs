//! Phase 2 of a move: every moving participant copied to its new shard
//! ([`crate::copy::copy_batch`]), then each copy verified against its source (count and
//! checksum); a copy that disagrees is discarded and the move stops.

use std::collections::{BTreeMap, BTreeSet};
use vitalsink_common::db::Shard;

use crate::copy::{checksums, copy_batch, recorded, throttle, Sums};
use crate::error::{Error, Result};
use crate::plan::{by_name, moving, Change};
use crate::progress::Progress;
use crate::state::{self, MoveRow, Phase};

use super::report::{Options, Report};

/// Phase 2: copies every moving participant not copied yet, then verifies every copy.
pub(super) async fn copy_and_verify(
    all: &[Shard],
    from: &[String],
    next: &[String],
    change: &Change,
    mv: &MoveRow,
    opts: Options,
    report: &mut Report,
) -> Result<()> {
    let losing: Vec<&Shard> = match change {
        Change::Add { .. } => from
            .iter()
            .map(|n| by_name(all, n))
            .collect::<Result<_>>()?,
        Change::Remove { name } => vec![by_name(all, name)?],
    };
    let (_, _, moves) = moving(&losing, next).await?;
    let total: i64 = moves.iter().map(|m| m.rows).sum();
    let map_shard = &all[0];
    let participants = i32::try_from(moves.len()).unwrap_or(i32::MAX);
    state::finished(map_shard, mv.id, Phase::Copying, participants, total).await?;
    let limit = throttle(opts.bytes_per_second);
    let mut copied: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for to in moves.iter().map(|m| m.to.as_str()).collect::<BTreeSet<_>>() {
        copied.insert(
            to.to_string(),
            recorded(by_name(all, to)?, mv.id, "copied")
                .await?
                .into_keys()
                .collect(),
        );
    }
    let is_copied = |m: &crate::plan::ParticipantMove| {
        copied
            .get(&m.to)
            .is_some_and(|s| s.contains(&m.participant_id))
    };
    let done: i64 = moves.iter().filter(|m| is_copied(m)).map(|m| m.rows).sum();
    let mut progress = Progress::new(total.max(0) as u64, done.max(0) as u64);
    let mut left = total - done;
    // Batches of participants with the same old and new shard, up to `batch_rows` rows.
    let mut batches: BTreeMap<(String, String), Vec<Vec<&crate::plan::ParticipantMove>>> =
        BTreeMap::new();
    for m in moves.iter().filter(|m| !is_copied(m)) {
        let route = batches.entry((m.from.clone(), m.to.clone())).or_default();
        let fits = route.last().is_some_and(|b| {
            b.iter().map(|x| x.rows).sum::<i64>() + m.rows <= opts.batch_rows.max(1)
        });
        if !fits {
            route.push(Vec::new());
        }
        if let Some(b) = route.last_mut() {
            b.push(m);
        }
    }
    for ((from_name, to_name), route) in &batches {
        let (src, dst) = (by_name(all, from_name)?, by_name(all, to_name)?);
        for batch in route {
            let ids: Vec<String> = batch.iter().map(|m| m.participant_id.clone()).collect();
            let sums = copy_batch(src, dst, mv.id, &ids, limit.as_ref()).await?;
            let rows: i64 = sums.values().map(|(n, _)| n).sum();
            report.copied_now += ids.len();
            left -= rows;
            progress.inc(rows.max(0) as u64);
            crate::metrics::copied(rows, left);
            state::progress(map_shard, mv.id, rows, 0).await?;
            crate::fault::point("copy");
        }
    }
    progress.finish();
    // Verify: each old shard's checksums of its moving participants, in one query, against
    // the copies' records.
    let mut copies: BTreeMap<String, Sums> = BTreeMap::new();
    for to in moves.iter().map(|m| m.to.clone()).collect::<BTreeSet<_>>() {
        let r = recorded(by_name(all, &to)?, mv.id, "copied").await?;
        copies.insert(to, r);
    }
    for src in &losing {
        let ids: Vec<String> = moves
            .iter()
            .filter(|m| m.from == src.name)
            .map(|m| m.participant_id.clone())
            .collect();
        let c = src.client().await?;
        let sources = checksums(&c, &ids).await.map_err(|e| src.err(e))?;
        for m in moves.iter().filter(|m| m.from == src.name) {
            let source = sources.get(&m.participant_id);
            let copy = copies.get(&m.to).and_then(|c| c.get(&m.participant_id));
            crate::metrics::verified(copy == source);
            if copy != source && mv.online {
                // New rows of the participant land beside the copy: it cannot be told apart
                // from them by participant, so it stays, and so do the old rows.
                return Err(Error::Verify {
                    participant: m.participant_id.clone(),
                    message: format!(
                        "{} holds {source:?} (rows, checksum) but {copy:?} was copied to {}: \
                         rows changed on the old shard after its cut-over (a writer that does not \
                         follow the shard map?). Nothing deleted; the move stops in phase copying",
                        src.name, m.to
                    ),
                });
            }
            if copy != source {
                let copy = copy.cloned();
                discard_copy(by_name(all, &m.to)?, mv.id, &m.participant_id).await?;
                return Err(Error::Verify {
                    participant: m.participant_id.clone(),
                    message: format!(
                        "{} holds {:?} (rows, checksum), the copy on {} {:?}; the copy was \
                         discarded (are workers writing?). Stop them and run the command again",
                        m.from, source, m.to, copy
                    ),
                });
            }
        }
    }
    report.participants = moves.len();
    report.rows = moves.iter().map(|m| m.rows).sum();
    tracing::info!(
        participants = report.participants,
        rows = report.rows,
        copied_now = report.copied_now,
        "copied and verified"
    );
    Ok(())
}

/// Removes a participant's copy and its record from `shard`, in one transaction.
async fn discard_copy(shard: &Shard, id: i64, participant: &str) -> Result<()> {
    let mut c = shard.client().await?;
    let tx = c.transaction().await.map_err(|e| shard.err(e))?;
    tx.execute(
        "DELETE FROM measurements WHERE participant_id = $1",
        &[&participant],
    )
    .await
    .map_err(|e| shard.err(e))?;
    tx.execute(
        "DELETE FROM shard_move_rows WHERE move_id = $1 AND participant_id = $2 AND side = 'copied'",
        &[&id, &participant],
    )
    .await
    .map_err(|e| shard.err(e))?;
    tx.commit().await.map_err(|e| shard.err(e))?;
    Ok(())
}
