//! Step 3 of an erasure: the archive objects that may hold the participant, each rewritten
//! without their rows, verified and swapped in as `migrate-archive` renames an object.

use object_store::path::Path;
use vitalsink_archiver::export::checksum::Algorithm;
use vitalsink_archiver::state::log::{self, Step};
use vitalsink_archiver::state::manifest;
use vitalsink_archiver::storage::readback;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::db::Shard;
use vitalsink_common::Config;

use super::rewrite;
use super::state::{crash, save, Rewrite, State};
use crate::error::{Error, Result};

/// The new name of an object rewritten by erasure `id`.
pub(super) fn rewritten_name(old: &str, id: i64) -> String {
    match old.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}-e{id}.parquet"),
        None => format!("{old}-e{id}.parquet"),
    }
}

/// Step 3a: which live objects may hold the participant.
pub(super) async fn scan(
    archive: &Archive,
    shards: &[Shard],
    participant: &str,
    id: i64,
    st: &mut State,
) -> Result<()> {
    for s in shards {
        let c = s.client().await?;
        for row in log::attempts(&**c, &s.name).await? {
            if !matches!(row.step, Step::Dropped | Step::Renamed) {
                continue;
            }
            let Some(path) = row.object_path.clone() else {
                continue;
            };
            if !rewrite::may_hold(archive, &Path::from(path.as_str()), participant).await? {
                continue;
            }
            st.objects.push(Rewrite {
                shard: s.name.clone(),
                new: rewritten_name(&path, id),
                old: path,
                old_rows: row.rows.unwrap_or(0),
                old_checksum: row.checksum.clone().unwrap_or_default(),
                new_rows: None,
                new_checksum: None,
                swapped: false,
                unchanged: false,
            });
        }
    }
    Ok(())
}

/// Step 3b for object `i`: rewrite, verify, swap in.
#[allow(clippy::too_many_arguments)]
pub(super) async fn swap(
    cfg: &Config,
    archive: &Archive,
    shards: &[Shard],
    participant: &str,
    id: i64,
    i: usize,
    st: &mut State,
    map: &Shard,
) -> Result<()> {
    let o = st.objects[i].clone();
    let s = shards
        .iter()
        .find(|s| s.name == o.shard)
        .ok_or_else(|| Error::Refused {
            action: format!("erase from {}", o.old),
            message: format!("shard {} is not configured", o.shard),
        })?;
    let c = s.client().await?;
    let attempts = log::attempts(&**c, &s.name).await?;
    if let Some(done) = attempts
        .iter()
        .find(|r| r.object_path.as_deref() == Some(o.new.as_str()))
    {
        // Swapped by a run killed before it recorded so: mirror again (same bytes), go on.
        manifest::mirror(archive, &**c, &s.name, done).await?;
        st.objects[i].swapped = true;
        st.delete.push(o.old.clone());
        return save(map, id, st).await;
    }
    let (old, new) = (Path::from(o.old.as_str()), Path::from(o.new.as_str()));
    // A killed run may have left a partial upload under the new name (a local root's staging
    // file, which pandas and pyarrow would read); the name is not in use before the swap.
    archive.delete(&new).await?;
    let w = rewrite::rewrite(archive, &cfg.archive, &old, &new, participant).await?;
    let rb = readback::read(archive, &new, Algorithm::of(Some(&w.summary.checksum))).await?;
    if rb.summary.rows != w.summary.rows
        || rb.summary.checksum != w.summary.checksum
        || w.rows_before as i64 != o.old_rows
    {
        return Err(Error::Failed(format!(
            "{new}: read back {} rows {}, wrote {} rows {} from {} rows (recorded {}); {old} kept",
            rb.summary.rows,
            rb.summary.checksum,
            w.summary.rows,
            w.summary.checksum,
            w.rows_before,
            o.old_rows
        )));
    }
    if w.summary.rows as i64 == o.old_rows {
        archive.delete(&new).await?;
        st.objects[i].swapped = true;
        st.objects[i].unchanged = true;
        return save(map, id, st).await;
    }
    st.objects[i].new_rows = Some(w.summary.rows as i64);
    st.objects[i].new_checksum = Some(w.summary.checksum.clone());
    save(map, id, st).await?;
    crash("after-object-write");
    let last = attempts
        .into_iter()
        .find(|r| r.object_path.as_deref() == Some(o.old.as_str()))
        .ok_or_else(|| {
            Error::Failed(format!("{}: no longer in {}'s archive_log", o.old, s.name))
        })?;
    let mut row = last.next(Step::Renamed);
    row.run_id = format!("erasure-{id}");
    row.object_path = Some(o.new.clone());
    row.renamed_from = Some(o.old.clone());
    row.rows = Some(w.summary.rows as i64);
    row.bytes = Some(rb.bytes as i64);
    row.checksum = Some(w.summary.checksum.clone());
    row.min_ts = w
        .summary
        .min_ts
        .and_then(chrono::DateTime::from_timestamp_micros);
    row.max_ts = w
        .summary
        .max_ts
        .and_then(chrono::DateTime::from_timestamp_micros);
    if row.source_ranges.is_some() {
        row.source_ranges = Some(w.summary.source_ranges.clone());
    }
    row.detail = Some(format!(
        "erasure {id}: {} rewritten without one participant's rows ({} of {} removed)",
        o.old,
        o.old_rows - w.summary.rows as i64,
        o.old_rows
    ));
    let row = log::insert(&**c, &s.name, &row).await?;
    manifest::mirror(archive, &**c, &s.name, &row).await?;
    st.objects[i].swapped = true;
    st.delete.push(o.old.clone());
    save(map, id, st).await?;
    crash("after-swap");
    tracing::info!(shard = %s.name, from = %o.old, to = %o.new, rows = w.summary.rows, "object rewritten without the participant");
    Ok(())
}
