//! Phase 4 of a move: each copied participant's rows deleted from its old shard, in batches,
//! after checking that the old shard holds exactly the rows copied.

use std::collections::BTreeMap;
use vitalsink_common::db::Shard;
use vitalsink_common::routing::ShardRouter;

use crate::copy::{checksums, recorded};
use crate::error::{Error, Result};
use crate::plan::by_name;
use crate::state::{self, MoveRow};

use super::report::Report;

/// One participant's copy: its id and (rows, checksum).
type CopyRecord = (String, (i64, String));

/// Participants per delete batch: as many as fit in `batch_rows` rows on average.
fn delete_batch(todo: &[&CopyRecord], batch_rows: i64) -> usize {
    let rows: i64 = todo.iter().map(|(_, (n, _))| *n).sum();
    let avg = (rows / i64::try_from(todo.len().max(1)).unwrap_or(1)).max(1);
    usize::try_from((batch_rows.max(1) / avg).max(1)).unwrap_or(1)
}

/// Phase 4: deletes every copied participant from its old shard, in batches of about
/// `batch_rows` rows, checking first that the old shard holds exactly the rows copied.
pub(super) async fn delete_moved(
    all: &[Shard],
    from: &[String],
    next: &[String],
    mv: &MoveRow,
    batch_rows: i64,
    report: &mut Report,
) -> Result<()> {
    let old_router = ShardRouter::new(from.len());
    for to in next {
        let dst = by_name(all, to)?;
        // This target's copies, grouped by the shard they came from.
        let mut by_source: BTreeMap<&str, Vec<CopyRecord>> = BTreeMap::new();
        for (pid, copy) in recorded(dst, mv.id, "copied").await? {
            let src = from[old_router.shard_for(&pid)].as_str();
            if src != dst.name {
                by_source.entry(src).or_default().push((pid, copy));
            }
        }
        for (src_name, copies) in by_source {
            let src = by_name(all, src_name)?;
            let deleted = recorded(src, mv.id, "deleted").await?;
            let todo: Vec<&CopyRecord> = copies
                .iter()
                .filter(|(p, _)| !deleted.contains_key(p))
                .collect();
            for batch in todo.chunks(delete_batch(&todo, batch_rows)) {
                let ids: Vec<String> = batch.iter().map(|(p, _)| p.clone()).collect();
                let mut c = src.client().await?;
                let tx = c.transaction().await.map_err(|e| src.err(e))?;
                let now = checksums(&tx, &ids).await.map_err(|e| src.err(e))?;
                for (pid, copy) in batch {
                    if now.get(pid) != Some(copy) {
                        return Err(Error::Verify {
                            participant: pid.clone(),
                            message: format!(
                                "{} now holds {:?} (rows, checksum) but {copy:?} was copied to \
                                 {}: rows changed after the copy; nothing of this batch deleted",
                                src.name,
                                now.get(pid),
                                dst.name
                            ),
                        });
                    }
                }
                tx.execute(
                    "DELETE FROM measurements WHERE participant_id = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(|e| src.err(e))?;
                let rows: Vec<i64> = batch.iter().map(|(_, (n, _))| *n).collect();
                let sums: Vec<&String> = batch.iter().map(|(_, (_, c))| c).collect();
                tx.execute(
                    "INSERT INTO shard_move_rows (move_id, participant_id, side, rows, checksum)
                     SELECT $1, p, 'deleted', n, c::numeric
                       FROM unnest($2::text[], $3::int8[], $4::text[]) AS v(p, n, c)",
                    &[&mv.id, &ids, &rows, &sums],
                )
                .await
                .map_err(|e| src.err(e))?;
                tx.commit().await.map_err(|e| src.err(e))?;
                let n: i64 = rows.iter().sum();
                report.deleted_now += ids.len();
                crate::metrics::deleted(n);
                state::progress(&all[0], mv.id, 0, n).await?;
                crate::fault::point("delete");
            }
        }
    }
    Ok(())
}
