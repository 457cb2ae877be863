//! Step 4 of an erasure: a new revision of every lock whose newest revision holds the
//! participant, and (step 5) the objects of earlier revisions it no longer names.

use object_store::path::Path;
use serde_json::json;
use std::collections::BTreeMap;
use vitalsink_archiver::export::checksum::Algorithm;
use vitalsink_archiver::storage::readback;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::audit::action;
use vitalsink_common::datalock::{self, Manifest, Object, Origin};
use vitalsink_common::db::Shard;
use vitalsink_common::Config;

use super::rewrite;
use super::state::{crash, save, Rewrite, State};
use crate::commands::lock_create::{revision_dir, store_revision};
use crate::error::{Error, Result};

/// Step 4.
pub(super) async fn revise_locks(
    cfg: &Config,
    archive: &Archive,
    map: &Shard,
    participant: &str,
    reason: &str,
    id: i64,
    st: &mut State,
) -> Result<()> {
    let names = datalock::names(map).await?;
    let replaced: BTreeMap<&str, &Rewrite> = st
        .objects
        .iter()
        .filter(|o| !o.unchanged)
        .map(|o| (o.old.as_str(), o))
        .collect();
    for name in names {
        let Some(m) = datalock::load(map, &name, None).await? else {
            continue;
        };
        if m.erased.iter().any(|p| p == participant) {
            continue;
        }
        let rev = m.revision + 1;
        let dir = revision_dir(&name, rev);
        let mut objects: Vec<Object> = Vec::new();
        let mut changed = false;
        let mut removed = 0i64;
        for o in &m.objects {
            if let Some(r) = replaced.get(o.path.as_str()) {
                let rows = r.new_rows.unwrap_or(o.rows);
                removed += o.rows - rows;
                objects.push(Object {
                    path: r.new.clone(),
                    rows,
                    checksum: r.new_checksum.clone().unwrap_or_default(),
                    ..o.clone()
                });
                changed = true;
                continue;
            }
            let p = Path::from(o.path.as_str());
            if o.origin == Origin::Hot && rewrite::may_hold(archive, &p, participant).await? {
                let file = o.path.rsplit('/').next().unwrap_or("part.parquet");
                let new = Path::from(format!("{dir}/shard={}/{file}", o.shard));
                archive.delete(&new).await?;
                let w = rewrite::rewrite(archive, &cfg.archive, &p, &new, participant).await?;
                let rb =
                    readback::read(archive, &new, Algorithm::of(Some(&w.summary.checksum))).await?;
                if rb.summary.rows != w.summary.rows || rb.summary.checksum != w.summary.checksum {
                    return Err(Error::Failed(format!(
                        "{new}: does not verify after rewriting"
                    )));
                }
                if w.summary.rows as i64 != o.rows {
                    changed = true;
                    removed += o.rows - w.summary.rows as i64;
                    objects.push(Object {
                        path: new.to_string(),
                        rows: w.summary.rows as i64,
                        checksum: w.summary.checksum.clone(),
                        bytes: rb.bytes as i64,
                        ..o.clone()
                    });
                    continue;
                }
                archive.delete(&new).await?;
            }
            objects.push(o.clone());
        }
        if !changed {
            continue;
        }
        let mut erased = m.erased.clone();
        erased.push(participant.to_string());
        erased.sort();
        let next = Manifest {
            name: name.clone(),
            revision: rev,
            locked_at: m.locked_at,
            rows: objects.iter().map(|o| o.rows).sum(),
            objects,
            erased,
        };
        let seq = store_revision(
            archive,
            map,
            &next,
            reason,
            action::LOCK_REVISE,
            json!({"erasure": id, "from_revision": m.revision, "rows_before": m.rows,
                   "rows_removed": removed, "participants_erased": 1}),
        )
        .await?;
        st.locks.push(
            json!({"lock": name, "from_revision": m.revision, "revision": rev,
                             "rows_before": m.rows, "rows_after": next.rows, "audit_seq": seq}),
        );
        save(map, id, st).await?;
        crash("after-lock-revision");
    }
    Ok(())
}

/// The Parquet objects under a lock's folder that its newest revision no longer names: the
/// earlier revisions' copies of rows an erasure removed.
pub(super) async fn superseded_lock_objects(
    archive: &Archive,
    map: &Shard,
    participant: &str,
) -> Result<Vec<Path>> {
    use futures::TryStreamExt;
    let names = datalock::names(map).await?;
    let mut out = Vec::new();
    for name in names {
        let Some(m) = datalock::load(map, &name, None).await? else {
            continue;
        };
        if !m.erased.iter().any(|p| p == participant) {
            continue;
        }
        let keep: std::collections::BTreeSet<&str> =
            m.objects.iter().map(|o| o.path.as_str()).collect();
        let prefix = Path::from(format!(
            "{}/{name}",
            crate::commands::lock_create::LOCKS_DIR
        ));
        let listed: Vec<object_store::ObjectMeta> = archive
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(vitalsink_archiver::Error::from)?;
        for o in listed {
            let p = o.location.to_string();
            if p.ends_with(".parquet") && !keep.contains(p.as_str()) {
                out.push(o.location);
            }
        }
    }
    Ok(out)
}
