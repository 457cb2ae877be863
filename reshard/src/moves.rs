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
//!
//! The phases' work, in the order a move does it: [`offsets`] (phase 1's check, an added
//! shard's offsets), [`verify`] (phase 2: copy and verify), [`delete`] (phase 4); what a run
//! is given and reports: [`report`].

pub mod delete;
pub mod offsets;
pub mod report;
pub mod verify;

use vitalsink_common::config::ShardConfig;
use vitalsink_common::db::Shard;
use vitalsink_common::shardmap;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::plan::{check_new_shard, next_shards, Change};
use crate::state::{self, MoveRow, Phase};
use delete::delete_moved;
use offsets::{copy_offsets, offsets_agree, seed_offsets};
pub use report::{Options, Report};
use verify::copy_and_verify;

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
