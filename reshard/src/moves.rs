//! Running a move. **Online** (the default), while producers and ingest workers keep running:
//!
//! 1. **start** — as offline below, without the offsets check; an added shard gets the lowest
//!    `ingest_offsets` of the others (nothing below them can route to it); the move and its
//!    target epoch go into the shard map in one transaction.
//! 2. **cutover** — a cut-over record into every partition ([`crate::cutover`]); the workers
//!    store each partition's cut-over as they reach it and route the records above it by the
//!    target epoch, writing to the added shard (or no longer to the removed one). The phase
//!    ends when every shard has applied every partition past its cut-over: from then on the
//!    moving participants' rows on their old shards are final.
//! 3. **copying → verified** — their history is copied and verified as offline (the copy
//!    goes through a staging table, so its checksum covers exactly the copied rows, not the
//!    new rows that already land beside them).
//! 4. **verified → done** — the history is deleted from the old shards, as offline.
//!
//! **Offline** (`--offline`), with the ingest workers and the archiver stopped (they refuse to
//! start while it is unfinished). Phases, each recorded in [`crate::state`] before the next
//! starts:
//!
//! 1. **start** — the configuration must list the map's current epoch; the change must be
//!    routable ([`crate::plan::next_shards`]); an added shard must answer and be empty; every
//!    shard's `ingest_offsets` must agree (the workers stopped cleanly: SIGTERM flushes them
//!    to the same offset on every shard). All shards, the new one included, are migrated.
//! 2. **copying** — every participant whose shard changes ([`crate::plan::moving`]) is copied
//!    to its new shard ([`crate::copy::copy_batch`]: streamed, throttled, one
//!    transaction with its `copied` record, skipped when already recorded), then verified:
//!    its rows' count and checksum on the old shard must equal the copy's. A copy that
//!    disagrees is discarded and the move stops (rows changed under it: a worker is writing).
//! 3. **verified → switched** — an added shard gets the others' `ingest_offsets` (so its
//!    partitions resume where the others do), then the next epoch goes into the shard map:
//!    from here routing names the new shards.
//! 4. **switched → done** — each moved participant's rows are deleted from its old shard in
//!    one transaction with its `deleted` record, after checking once more that they are
//!    exactly the rows copied.
//!
//! A kill at any moment leaves a state the same command resumes: copies and deletes commit
//! with their records, the switch is an idempotent insert, and the phase says where to go on.
//! For the whole run it holds the bulk lock on every shard (the archiver's advisory lock), so
//! no chunk is archived or dropped under a move; archivers that start later see the unfinished
//! move and wait.
//!
//! Audit (issue 26, [`crate::audit`]): the move's entry, with the operator's `--reason`, is
//! appended in the transaction that records `done`; an added shard gets the map shard's
//! `participant_status` before routing names it.
//!
//! Offline is Citus's and Vitess's order — copy, verify, switch, then clean up the source.
//! Online switches first, at fixed positions of the Kafka log, and copies after: the log is
//! the catch-up stream that Vitess replays from the binlog and Citus from logical
//! replication.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use vitalsink_common::config::ShardConfig;
use vitalsink_common::db::Shard;
use vitalsink_common::routing::ShardRouter;
use vitalsink_common::shardmap;
use vitalsink_common::Config;

use crate::copy::{checksums, copy_batch, throttle, Sums};
use crate::error::{Error, Result};
use crate::plan::{check_new_shard, moving, next_shards, Change};
use crate::progress::Progress;
use crate::state::{self, MoveRow, Phase};

/// How a move runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run while ingest runs (cut-over records); `false` for `--offline`. A resumed move
    /// keeps the mode it started in.
    pub online: bool,
    /// Online: how long to wait for the cut-over before stopping (a re-run waits again).
    pub cutover_timeout: std::time::Duration,
    /// Copy throttle, bytes per second of COPY stream; 0 for none.
    pub bytes_per_second: u32,
    /// Rows per copy or delete batch (one transaction each); at least one participant.
    pub batch_rows: i64,
}

/// What a run of the command did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The move's id.
    pub move_id: i64,
    /// Epoch it started from.
    pub from_epoch: i32,
    /// Epoch it ended in.
    pub to_epoch: i32,
    /// Participants that moved.
    pub participants: usize,
    /// Their rows.
    pub rows: i64,
    /// Participants copied by this run (the others were copied by an earlier, killed run).
    pub copied_now: usize,
    /// Participants deleted from their old shard by this run.
    pub deleted_now: usize,
}

/// Runs (or resumes) `change` over the shards of `cfg`; `reason` (the operator's `--reason`)
/// goes into the move's audit entry.
///
/// # Errors
/// [`Error::Refused`] when the change cannot be made (nothing changed) or another move is
/// unfinished; [`Error::Verify`] when a copy disagrees with its source; database errors (the
/// move stops where it was; running the command again resumes it).
pub async fn run(cfg: &Config, change: &Change, opts: Options, reason: &str) -> Result<Report> {
    let shards = Shard::all(&cfg.shards, &cfg.database)?;
    let map_shard = shards
        .first()
        .ok_or_else(|| vitalsink_common::Error::ShardMap("no shards configured".into()))?;
    vitalsink_common::migrate::migrate_all(&shards, &cfg.database).await?;
    let (kind, name) = match change {
        Change::Add { name, .. } => ("add", name.clone()),
        Change::Remove { name } => ("remove", name.clone()),
    };
    let added = match change {
        Change::Add { name, url } => {
            let s = Shard::new(
                shards.len(),
                &ShardConfig {
                    name: name.clone(),
                    url: url.clone(),
                    replicas: Vec::new(),
                },
                &cfg.database,
            )?;
            Some(s)
        }
        Change::Remove { .. } => None,
    };
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    // Held for the whole run: no archiver exports or drops a chunk of these shards meanwhile.
    let _locks = lock_shards(shards.iter().chain(added.as_ref()), change).await?;
    let mv = match state::unfinished(map_shard).await? {
        Some(m) if m.kind == kind && m.shard == name => {
            if let (Some(s), Some(want)) = (&added, &m.target_id) {
                let got = state::database_id(s).await?;
                if &got != want {
                    return Err(Error::Refused {
                        action: change.action(),
                        message: format!(
                            "--url reaches database {got}, but move {} started copying into \
                             {want}; give the first run's --url to resume it",
                            m.id
                        ),
                    });
                }
            }
            tracing::info!(
                move_id = m.id,
                phase = m.phase.as_str(),
                "resuming the unfinished move"
            );
            m
        }
        Some(m) => {
            return Err(Error::Refused {
                action: change.action(),
                message: format!(
                    "move {} ({} shard {}, epoch {} → {}) is unfinished in phase {}: run that \
                     command again to finish it first",
                    m.id,
                    m.kind,
                    m.shard,
                    m.from_epoch,
                    m.to_epoch,
                    m.phase.as_str()
                ),
            })
        }
        None => {
            // A deployment no worker has started on yet gets epoch 1 from the configuration,
            // as the first worker would write it.
            let map = shardmap::bootstrap(&shards).await?;
            shardmap::check(&map, &names)?;
            next_shards(&map, change)?;
            if let Change::Add { name, url } = change {
                check_new_shard(shards.len(), name, url, &cfg.database, change).await?;
            }
            if !opts.online {
                offsets_agree(&shards, change).await?;
            }
            let target_id = match &added {
                Some(s) => Some(state::database_id(s).await?),
                None => None,
            };
            let next = next_shards(&map, change)?;
            let url = match change {
                Change::Add { url, .. } => url.clone(),
                Change::Remove { name } => cfg
                    .shards
                    .iter()
                    .find(|s| &s.name == name)
                    .map(|s| s.url.clone())
                    .unwrap_or_default(),
            };
            if let (true, Some(s)) = (opts.online, &added) {
                vitalsink_common::migrate::migrate_recorded(s, map_shard, &cfg.database).await?;
                seed_offsets(&shards, s).await?;
            }
            let reason = format!("reshard: {kind} shard {name} (online, cut-over per partition)");
            let m = state::start(
                map_shard,
                &state::NewMove {
                    from_epoch: map.epoch,
                    kind,
                    shard: &name,
                    target_id: target_id.as_deref(),
                    online: opts.online.then_some((next.as_slice(), url.as_str())),
                    url: url.as_str(),
                    reason: &reason,
                },
            )
            .await?;
            tracing::info!(
                move_id = m.id,
                from = m.from_epoch,
                to = m.to_epoch,
                "move started"
            );
            m
        }
    };
    // An added shard: migrated, and given the participants' status before routing names it
    // (the cut-over records below, or the switch).
    let mut statuses = added.as_ref().map(|_| crate::audit::StatusCopy::default());
    if let (Some(s), Some(done)) = (&added, statuses.as_mut()) {
        vitalsink_common::migrate::migrate_recorded(s, map_shard, &cfg.database).await?;
        crate::audit::copy_statuses(map_shard, s, done).await?;
    }
    let from = state::epoch(map_shard, mv.from_epoch)
        .await?
        .ok_or_else(|| {
            vitalsink_common::Error::ShardMap(format!(
                "epoch {} is missing from the map",
                mv.from_epoch
            ))
        })?;
    shardmap::check(&from, &names)?;
    let next = next_shards(&from, change)?;
    let all: Vec<Shard> = shards.iter().cloned().chain(added).collect();
    // Totals as recorded at `verified`; the copy phase sets them when it runs.
    let mut report = Report {
        move_id: mv.id,
        from_epoch: mv.from_epoch,
        to_epoch: mv.to_epoch,
        participants: usize::try_from(mv.participants).unwrap_or(0),
        rows: mv.rows_total,
        ..Report::default()
    };
    let mut phase = mv.phase;
    if phase == Phase::Cutover {
        let partitions = crate::cutover::partitions(cfg)?;
        let st = crate::cutover::standing(cfg, &all, mv.to_epoch, &partitions).await?;
        if !st.waiting.is_empty() {
            crate::cutover::publish(cfg, mv.id, mv.to_epoch, &st.waiting).await?;
        }
        crate::fault::point("cutover");
        crate::cutover::wait(cfg, &all, mv.to_epoch, &partitions, opts.cutover_timeout).await?;
        record(map_shard, &mv, Phase::Copying, &report).await?;
        phase = Phase::Copying;
    }
    if phase == Phase::Copying {
        copy_and_verify(&all, &from.shards, &next, change, &mv, opts, &mut report).await?;
        crate::fault::point("verify");
        record(map_shard, &mv, Phase::Verified, &report).await?;
        phase = Phase::Verified;
    }
    if phase == Phase::Verified && mv.online {
        // The switch happened at the cut-over.
        phase = Phase::Switched;
    }
    if phase == Phase::Verified {
        if let Change::Add { .. } = change {
            copy_offsets(&shards, &all[all.len() - 1]).await?;
        }
        crate::fault::point("switch");
        let reason = format!("reshard: {kind} shard {name} (move {})", mv.id);
        state::switch(map_shard, mv.to_epoch, &next, &reason).await?;
        tracing::info!(epoch = mv.to_epoch, shards = %next.join(", "), "switched: the new epoch routes");
        record(map_shard, &mv, Phase::Switched, &report).await?;
        phase = Phase::Switched;
    }
    if phase == Phase::Switched {
        delete_moved(&all, &from.shards, &next, &mv, opts.batch_rows, &mut report).await?;
        if let (Some(s), Some(done)) = (all.get(shards.len()), statuses.as_mut()) {
            // Changes recorded on the configured shards while the move ran.
            crate::audit::copy_statuses(map_shard, s, done).await?;
        }
        crate::audit::finish(
            &all,
            &from.shards,
            &next,
            &mv,
            change,
            &report,
            reason,
            statuses,
        )
        .await?;
        tracing::info!(move_id = mv.id, "move done");
    }
    Ok(report)
}

/// Records that `mv` finished `phase`, with the report's totals.
async fn record(map_shard: &Shard, mv: &MoveRow, phase: Phase, report: &Report) -> Result<()> {
    let participants = i32::try_from(report.participants).unwrap_or(i32::MAX);
    state::finished(map_shard, mv.id, phase, participants, report.rows).await?;
    crate::metrics::phase(phase);
    Ok(())
}

/// Takes [`vitalsink_common::db::BULK_LOCK_KEY`] on every shard, on connections kept for
/// the run (the locks go with their sessions, so a killed run leaves none behind).
///
/// # Errors
/// [`Error::Refused`] naming a shard whose lock an archiver (or another `reshard`) holds.
async fn lock_shards<'a>(
    shards: impl Iterator<Item = &'a Shard>,
    change: &Change,
) -> Result<Vec<deadpool_postgres::Object>> {
    let mut held = Vec::new();
    for s in shards {
        // A session of its own: `database.direct_urls.<shard>` behind a transaction pooler.
        let c = s.session_client().await?;
        let ok: bool = c
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&vitalsink_common::db::BULK_LOCK_KEY],
            )
            .await
            .map_err(|e| s.err(e))?
            .get(0);
        if !ok {
            return Err(Error::Refused {
                action: change.action(),
                message: format!(
                    "an archiver (or another reshard) is working on shard {}; run this again when                      it has finished",
                    s.name
                ),
            });
        }
        held.push(c);
    }
    Ok(held)
}

/// The shard of `all` named `name`.
///
/// # Errors
/// [`vitalsink_common::Error::ShardMap`] when none is.
pub(crate) fn by_name<'a>(all: &'a [Shard], name: &str) -> Result<&'a Shard> {
    all.iter().find(|s| s.name == name).ok_or_else(|| {
        vitalsink_common::Error::ShardMap(format!("shard {name} of the map is not configured"))
            .into()
    })
}

/// Phase 2: copies every moving participant not copied yet, then verifies every copy.
async fn copy_and_verify(
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

/// Per participant, (rows, checksum) recorded on `shard` for move `id` as `side`.
pub(crate) async fn recorded(shard: &Shard, id: i64, side: &str) -> Result<Sums> {
    let c = shard.client().await?;
    let rows = c
        .query(
            "SELECT participant_id, rows, checksum::text FROM shard_move_rows
              WHERE move_id = $1 AND side = $2",
            &[&id, &side],
        )
        .await
        .map_err(|e| shard.err(e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
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
async fn offsets_agree(shards: &[Shard], change: &Change) -> Result<()> {
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
async fn seed_offsets(old: &[Shard], new: &Shard) -> Result<()> {
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
async fn copy_offsets(old: &[Shard], new: &Shard) -> Result<()> {
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
async fn delete_moved(
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
