//! `trial participants erase ID --reason …`: removes a participant from every shard and from
//! the archive (GDPR Art. 17), keeping the archive's checksums, manifest and locks exact.
//!
//! Steps, each recorded in the participant's row of `erasures` (map shard) before the next
//! begins, so that running the command again after a kill at any point resumes and ends in the
//! same state ([`CRASH_ENV`] makes the tests kill it at each):
//! 1. **status**: `erased` in `participant_status` on every shard, under the exclusive
//!    withdrawal lock (`vitalsink_common::participants`): from then on ingest stores none of
//!    their readings, a resend included (dead-letter reason `erased`);
//! 2. **hot rows**: counted, then deleted on each shard (`vitalsink_erase_participant`);
//! 3. **archive**: every live object whose row-group statistics may hold the participant is
//!    rewritten without their rows to `<old name>-e<erasure id>.parquet` ([`rewrite`]), read
//!    back and verified (rows = old − erased, content checksum), then swapped in as
//!    `migrate-archive` renames an object: a `renamed` row in the shard's `archive_log`,
//!    mirrored to the manifest;
//! 4. **locks**: each lock whose newest revision holds the participant gets a new revision
//!    (its objects rewritten under `locks/<name>/rev=<n+1>/`, archive objects replaced by their
//!    rewrites), recorded with its own audit entry (`lock.revise`);
//! 5. **delete**: the old objects (and the old lock revision's objects that held the
//!    participant) are deleted;
//! 6. **audit**: one `participant.erase` entry with counts and checksums before and after,
//!    never a value.
//!
//! Outside vitalsink's reach (README "Running a trial"): the source topic until its retention
//! expires, the dead-letter topic, database backups and WAL archives, object-store versions.

pub mod rewrite;

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use vitalsink_archiver::export::checksum::Algorithm;
use vitalsink_archiver::state::log::{self, Step};
use vitalsink_archiver::state::manifest;
use vitalsink_archiver::storage::readback;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::datalock::{self, Manifest, Object, Origin};
use vitalsink_common::db::Shard;
use vitalsink_common::participants;
use vitalsink_common::Config;

use crate::commands::lock_create::{revision_dir, store_revision};
use crate::commands::map_shard;
use crate::error::{Error, Result};

/// Environment variable naming a point where the command aborts the process, as if killed
/// there (tests only; like the archiver's `ARCHIVER_CRASH_AT`): `after-status`,
/// `after-hot-delete`, `after-object-write`, `after-swap`, `after-lock-revision`,
/// `before-delete`, `before-audit`.
pub const CRASH_ENV: &str = "TRIAL_CRASH_AT";

fn crash(point: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|p| p == point) {
        tracing::error!(point, "fault injection: aborting the process");
        std::process::abort();
    }
}

/// One shard's hot rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hot {
    /// Rows of the participant before the delete.
    before: i64,
    /// Rows the delete removed (`None`: not yet deleted).
    deleted: Option<i64>,
}

/// One archive object's rewrite.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rewrite {
    shard: String,
    old: String,
    new: String,
    old_rows: i64,
    old_checksum: String,
    new_rows: Option<i64>,
    new_checksum: Option<String>,
    swapped: bool,
    /// The statistics said "maybe" but the object holds no row of the participant: left as it
    /// is, not swapped.
    #[serde(default)]
    unchanged: bool,
}

/// Progress of one erasure, kept as JSON in `erasures.state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    status_seq: Option<i64>,
    hot: BTreeMap<String, Hot>,
    scanned: bool,
    objects: Vec<Rewrite>,
    locks: Vec<serde_json::Value>,
    locks_done: bool,
    /// Objects to delete once the locks are revised.
    delete: Vec<String>,
    deleted: bool,
}

async fn save(map: &Shard, id: i64, st: &State) -> Result<()> {
    let text = serde_json::to_string(st).map_err(|e| Error::Output(e.to_string()))?;
    let c = map.client().await?;
    c.execute(
        "UPDATE erasures SET state = $2 WHERE id = $1",
        &[&id, &text],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    Ok(())
}

/// Erases `participant`; returns the report the command prints.
///
/// # Errors
/// [`Error::Common`]/[`Error::Archive`] on a failing shard or store (run the command again to
/// resume), [`Error::Failed`] when a rewritten object does not verify (the old one is kept).
pub async fn run(
    cfg: &Config,
    shards: &[Shard],
    participant: &str,
    reason: &str,
) -> Result<serde_json::Value> {
    if participant.trim().is_empty() {
        return Err(Error::Arg {
            arg: "participant",
            message: "must not be empty".into(),
        });
    }
    let map = map_shard(shards)?;
    let archive = vitalsink_archiver::storage::store::open(&cfg.archive)?;
    let (id, mut st, done) = start(map, participant, reason).await?;
    if let Some(report) = done {
        return Ok(report);
    }
    status(shards, participant, reason, id, &mut st, map).await?;
    crash("after-status");
    for s in shards {
        hot(s, participant, id, &mut st, map).await?;
    }
    crash("after-hot-delete");
    if !st.scanned {
        scan(&archive, shards, participant, id, &mut st).await?;
        st.scanned = true;
        save(map, id, &st).await?;
    }
    for i in 0..st.objects.len() {
        if !st.objects[i].swapped {
            swap(cfg, &archive, shards, participant, id, i, &mut st, map).await?;
        }
    }
    if !st.locks_done {
        revise_locks(cfg, &archive, map, participant, reason, id, &mut st).await?;
        st.locks_done = true;
        save(map, id, &st).await?;
    }
    crash("before-delete");
    if !st.deleted {
        let keep = datalock::referenced(map).await?;
        for p in &st.delete {
            if keep.contains(p) {
                tracing::warn!(object = %p, "still named by a lock's newest revision; kept");
                continue;
            }
            archive.delete(&Path::from(p.as_str())).await?;
        }
        for p in superseded_lock_objects(&archive, map, participant).await? {
            archive.delete(&p).await?;
        }
        st.deleted = true;
        save(map, id, &st).await?;
    }
    crash("before-audit");
    finish(map, participant, reason, id, &st).await
}

/// Finds the participant's unfinished erasure or starts one; a finished one returns its
/// report.
async fn start(
    map: &Shard,
    participant: &str,
    reason: &str,
) -> Result<(i64, State, Option<serde_json::Value>)> {
    let c = map.client().await?;
    let e = |x| Error::pg(map, x);
    if let Some(r) = c
        .query_opt(
            "SELECT id, state FROM erasures WHERE participant_id = $1 AND finished_at IS NULL",
            &[&participant],
        )
        .await
        .map_err(e)?
    {
        let state: String = r.get(1);
        let st = serde_json::from_str(&state).unwrap_or_default();
        tracing::info!(
            participant,
            erasure = r.get::<_, i64>(0),
            "resuming an unfinished erasure"
        );
        return Ok((r.get(0), st, None));
    }
    if let Some(r) = c
        .query_opt(
            "SELECT id, audit_seq FROM erasures WHERE participant_id = $1 ORDER BY id DESC LIMIT 1",
            &[&participant],
        )
        .await
        .map_err(e)?
    {
        let (id, seq): (i64, Option<i64>) = (r.get(0), r.get(1));
        let left = remaining_hot(map, participant).await?;
        if left == 0 {
            let details = match seq {
                Some(s) => audit::read(map, s, Some(s))
                    .await?
                    .first()
                    .and_then(|e| serde_json::from_str(&e.details).ok())
                    .unwrap_or_default(),
                None => json!({}),
            };
            return Ok((
                id,
                State::default(),
                Some(
                    json!({"participant": participant, "erasure": id, "already_erased": true,
                            "audit_seq": seq, "details": details}),
                ),
            ));
        }
    }
    let id: i64 = c
        .query_one(
            "INSERT INTO erasures (participant_id, reason) VALUES ($1, $2) RETURNING id",
            &[&participant, &reason],
        )
        .await
        .map_err(e)?
        .get(0);
    Ok((id, State::default(), None))
}

async fn remaining_hot(s: &Shard, participant: &str) -> Result<i64> {
    let c = s.client().await?;
    Ok(c.query_one(
        "SELECT count(*) FROM measurements WHERE participant_id = $1",
        &[&participant],
    )
    .await
    .map_err(|e| Error::pg(s, e))?
    .get(0))
}

/// Step 1.
async fn status(
    shards: &[Shard],
    participant: &str,
    reason: &str,
    id: i64,
    st: &mut State,
    map: &Shard,
) -> Result<()> {
    let seq = match st.status_seq {
        Some(s) => s,
        None => {
            let mut seq = 0i64;
            for s in shards {
                let c = s.client().await?;
                seq = seq.max(
                    participants::version(&**c)
                        .await
                        .map_err(|e| Error::pg(s, e))?,
                );
            }
            st.status_seq = Some(seq + 1);
            save(map, id, st).await?;
            seq + 1
        }
    };
    for s in shards {
        let mut c = s.client().await?;
        let tx = c.transaction().await.map_err(|e| Error::pg(s, e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&participants::LOCK_KEY],
        )
        .await
        .map_err(|e| Error::pg(s, e))?;
        tx.execute(
            "INSERT INTO participant_status (seq, participant_id, status, effective_at, reason)
             VALUES ($1, $2, 'erased', now(), $3) ON CONFLICT (seq) DO NOTHING",
            &[&seq, &participant, &reason],
        )
        .await
        .map_err(|e| Error::pg(s, e))?;
        tx.commit().await.map_err(|e| Error::pg(s, e))?;
    }
    Ok(())
}

/// Step 2 on one shard.
async fn hot(s: &Shard, participant: &str, id: i64, st: &mut State, map: &Shard) -> Result<()> {
    if st.hot.get(&s.name).is_some_and(|h| h.deleted.is_some()) {
        return Ok(());
    }
    if !st.hot.contains_key(&s.name) {
        let before = remaining_hot(s, participant).await?;
        st.hot.insert(
            s.name.clone(),
            Hot {
                before,
                deleted: None,
            },
        );
        save(map, id, st).await?;
    }
    let c = s.client().await?;
    let n: i64 = c
        .query_one("SELECT vitalsink_erase_participant($1)", &[&participant])
        .await
        .map_err(|e| Error::pg(s, e))?
        .get(0);
    if let Some(h) = st.hot.get_mut(&s.name) {
        // A resumed delete finds fewer (the first one committed): the count recorded before
        // the first delete stands.
        h.deleted = Some(if n == 0 { h.before } else { n });
    }
    save(map, id, st).await?;
    tracing::info!(shard = %s.name, rows = n, "hot rows erased");
    Ok(())
}

/// The new name of an object rewritten by erasure `id`.
fn rewritten_name(old: &str, id: i64) -> String {
    match old.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}-e{id}.parquet"),
        None => format!("{old}-e{id}.parquet"),
    }
}

/// Step 3a: which live objects may hold the participant.
async fn scan(
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
async fn swap(
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

/// Step 4.
async fn revise_locks(
    cfg: &Config,
    archive: &Archive,
    map: &Shard,
    participant: &str,
    reason: &str,
    id: i64,
    st: &mut State,
) -> Result<()> {
    let names: Vec<String> = {
        let c = map.client().await?;
        c.query("SELECT DISTINCT name FROM dataset_locks ORDER BY name", &[])
            .await
            .map_err(|e| Error::pg(map, e))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
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
async fn superseded_lock_objects(
    archive: &Archive,
    map: &Shard,
    participant: &str,
) -> Result<Vec<Path>> {
    use futures::TryStreamExt;
    let names: Vec<String> = {
        let c = map.client().await?;
        c.query("SELECT DISTINCT name FROM dataset_locks ORDER BY name", &[])
            .await
            .map_err(|e| Error::pg(map, e))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
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

/// Step 6: the audit entry and the end of the erasure, in one transaction.
async fn finish(
    map: &Shard,
    participant: &str,
    reason: &str,
    id: i64,
    st: &State,
) -> Result<serde_json::Value> {
    let hot_before: i64 = st.hot.values().map(|h| h.before).sum();
    let details = json!({
        "erasure": id,
        "status_seq": st.status_seq,
        "hot_rows": st.hot.iter().map(|(k, h)| (k.clone(), json!({"before": h.before, "after": 0}))).collect::<serde_json::Map<_, _>>(),
        "hot_rows_erased": hot_before,
        "objects": st.objects.iter().filter(|o| !o.unchanged).map(|o| json!({
            "shard": o.shard, "before": o.old, "after": o.new,
            "rows_before": o.old_rows, "rows_after": o.new_rows,
            "checksum_before": o.old_checksum, "checksum_after": o.new_checksum,
        })).collect::<Vec<_>>(),
        "archived_rows_erased": st.objects.iter().map(|o| o.old_rows - o.new_rows.unwrap_or(o.old_rows)).sum::<i64>(),
        "lock_revisions": st.locks,
        "outside_reach": ["source topic until its retention", "dead-letter topic", "database backups and WAL archives", "object-store versions"],
    });
    let mut c = map.client().await?;
    let tx = c.transaction().await.map_err(|e| Error::pg(map, e))?;
    let entry = audit::append_in(
        &tx,
        map,
        &Record::new(action::ERASE, details.clone())
            .reason(Some(reason))
            .participants([participant.to_string()]),
    )
    .await?;
    tx.execute(
        "UPDATE erasures SET finished_at = now(), audit_seq = $2 WHERE id = $1",
        &[&id, &entry.seq],
    )
    .await
    .map_err(|e| Error::pg(map, e))?;
    tx.commit().await.map_err(|e| Error::pg(map, e))?;
    Ok(
        json!({"participant": participant, "erasure": id, "audit_seq": entry.seq, "details": details}),
    )
}
