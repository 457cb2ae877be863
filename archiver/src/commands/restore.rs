//! `restore --from --to [--participant …]`: loads archived rows of a time window back into the
//! hypertable of the shard the shard map routes each participant to **now** — after a shard
//! move (`reshard`) that is not the shard the object came from — exactly once.
//!
//! Which objects: the live ones of the manifest (newest entry `verified` or `dropped`, or the
//! new name of a `renamed` one) whose ts range overlaps `[from, to)`, each read under the path
//! its entry records, whichever layout named it; the manifest is in the archive, so this works
//! even when the shard's own log was lost. Per object and per shard of the current epoch that
//! any of its rows route to, in one transaction on that shard:
//! 1. a transaction-level advisory lock serialises restores on the shard;
//! 2. the object is streamed, rows in `[from, to)` (and of the given participants) whose
//!    participant routes to this shard are `COPY … BINARY`'d into a temporary table, all
//!    fourteen columns: the provenance is written back unchanged, and an object of file
//!    format version 1 (seven columns, archived before schema version 12) gives NULL in it;
//! 3. `INSERT … SELECT … WHERE NOT EXISTS … ON CONFLICT DO NOTHING` adds only readings not
//!    already in the hypertable, a reading being identified as schemas/README.md says ("A
//!    reading's identity, time and source"): `participant_id`, `ts`, `metric`,
//!    `coalesce(device_id, '')` and `value` equal and `occurrence IS NOT DISTINCT FROM` (so a
//!    row from before schema version 12, NULL occurrence, is found again too, and a second
//!    restore adds nothing; the unique index `measurements_reading` serves the look-up);
//! 4. a `restored` log row (window, object, rows inserted, rows skipped) commits with them
//!    (on a shard other than the object's own, only when some of its rows went there).
//!
//! Exactly once therefore means: after any number of restores, of the same or overlapping
//! windows, interrupted or not, each archived reading of the windows is in the hypertable
//! once. A second identical restore inserts nothing and says so. Restored windows hold their
//! chunks back from `run` (see [`crate::state::log::restored_windows`]), so they are not archived a
//! second time.
//!
//! **Audit.** A restore appends one `archive.restore` entry ([`action::ARCHIVE_RESTORE`]) to
//! the trail on the map shard when it ends, also when it fails after restoring some objects
//! (`"completed": false` with the error); `participants` holds the `--participant` filter
//! (empty: all participants). Its `details`: `from`/`to` (the window),
//! `participants_filter` (the filter, `null`: all), `restore_id` (the `run_id` of every
//! `restored` log row it wrote), `objects_read`, `objects` (up to [`LISTED`] of them: path,
//! source shard, rows and content checksum as the manifest records them), `rows_matched`
//! (archived rows of the window and filter), `rows_inserted` (rows added to the shards: the
//! hypertables hold that many more rows afterwards), `rows_skipped` (already there), the same
//! three per shard under `shards`, `completed` and `error`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use vitalsink_common::audit::{self, action, Record};

use crate::error::{pg, Error, Result};
use crate::runner::Runner;
use crate::state::manifest;

mod object;
use object::restore_object;

/// Advisory-lock key serialising restores on a shard ("vsrestor").
const RESTORE_LOCK: i64 = 0x7673_7265_7374_6f72;

/// What to restore.
#[derive(Debug, Clone)]
pub struct Request {
    /// Window start, inclusive.
    pub from: DateTime<Utc>,
    /// Window end, exclusive.
    pub to: DateTime<Utc>,
    /// Only these participants (empty: all).
    pub participants: BTreeSet<String>,
}

/// Totals of a restore.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Report {
    /// Objects read.
    pub objects: usize,
    /// Archived rows in the window.
    pub matched: u64,
    /// Rows inserted into the hypertables.
    pub inserted: u64,
    /// Rows already present, not inserted again.
    pub skipped: u64,
}

/// Objects listed by name in a restore's audit entry (the count covers all).
pub const LISTED: usize = 100;

/// What a restore did, for its audit entry.
#[derive(Debug, Default)]
struct Tally {
    /// Per shard: rows matched, inserted.
    shards: BTreeMap<String, (u64, u64)>,
    /// Objects read: path, source shard, rows, checksum.
    objects: Vec<Value>,
    /// Objects read in all.
    read: usize,
}

impl Tally {
    /// The entry's `details` (module docs).
    fn details(
        &self,
        req: &Request,
        restore_id: &str,
        report: &Report,
        error: Option<&Error>,
    ) -> Value {
        let shards: serde_json::Map<String, Value> = self
            .shards
            .iter()
            .map(|(k, (m, i))| {
                (
                    k.clone(),
                    json!({"rows_matched": m, "rows_inserted": i, "rows_skipped": m - i}),
                )
            })
            .collect();
        json!({
            "from": req.from,
            "to": req.to,
            "participants_filter": (!req.participants.is_empty()).then_some(&req.participants),
            "restore_id": restore_id,
            "objects_read": self.read,
            "objects": self.objects,
            "rows_matched": report.matched,
            "rows_inserted": report.inserted,
            "rows_skipped": report.skipped,
            "shards": shards,
            "completed": error.is_none(),
            "error": error.map(ToString::to_string),
        })
    }
}

/// Restores `req` from the archive of `runner`, then appends its audit entry (module docs).
///
/// # Errors
/// A shard list other than the shard map's ([`Runner::check_shard_map`]); [`Error::Arg`]
/// when, with no shard move ever made, an object's shard is not configured; store, Parquet
/// and database errors. Objects restored before the error stay restored (and logged, and in
/// the audit entry). [`Error::Common`] when the audit entry cannot be appended (the rows stay
/// restored).
pub async fn restore(runner: &Runner, req: &Request) -> Result<Report> {
    runner.check_shard_map().await?;
    let restore_id = crate::storage::layout::new_attempt();
    let mut report = Report::default();
    let mut tally = Tally::default();
    let res = restore_all(runner, req, &restore_id, &mut report, &mut tally).await;
    let wrote = res.is_ok() || !tally.shards.is_empty();
    if let (true, Some(map_shard)) = (wrote, runner.shards().first()) {
        let rec = Record::new(
            action::ARCHIVE_RESTORE,
            tally.details(req, &restore_id, &report, res.as_ref().err()),
        )
        .reason(runner.reason())
        .participants(req.participants.iter().cloned());
        let appended = audit::append(map_shard, &rec).await;
        runner.copy_trail().await;
        if let Err(e) = appended {
            tracing::error!(error = %e, ?report, "rows restored, but the restore's audit entry could not be appended");
            return Err(res.err().unwrap_or(Error::Common(vitalsink_common::Error::Audit(
                format!("restore {restore_id} done ({report:?}), but its audit entry could not be appended: {e}"),
            ))));
        }
    }
    res.map(|()| report)
}

/// The restore itself: every live object overlapping the window, counted in `report` and
/// `tally` as it goes.
async fn restore_all(
    runner: &Runner,
    req: &Request,
    restore_id: &str,
    report: &mut Report,
    tally: &mut Tally,
) -> Result<()> {
    let entries = manifest::read_all(runner.archive()).await?;
    let from = req.from.timestamp_micros();
    let to = req.to.timestamp_micros();
    let mut migrated = BTreeSet::new();
    // Without a shard move ever, every row routes to the shard its object came from: read
    // each object once, for that shard only.
    let moved = match runner.shards().first() {
        Some(map_shard) => map_shard
            .client()
            .await?
            .query_one("SELECT EXISTS (SELECT 1 FROM shard_moves)", &[])
            .await
            .map_err(pg(&map_shard.name))?
            .get::<_, bool>(0),
        None => false,
    };
    for ((shard_name, path), st) in manifest::objects(&entries) {
        let r = &st.last.row;
        let overlaps = match (r.min_ts, r.max_ts) {
            (Some(lo), Some(hi)) => lo.timestamp_micros() < to && hi.timestamp_micros() >= from,
            _ => false,
        };
        if !st.is_live() || !overlaps {
            continue;
        }
        // Routing over the configured shards, which check_shard_map found equal to the map's
        // current epoch.
        let router = vitalsink_common::routing::ShardRouter::new(runner.shards().len());
        if !moved && !runner.shards().iter().any(|s| s.name == shard_name) {
            return Err(Error::Arg {
                arg: "restore",
                message: format!(
                    "object {path} comes from shard {shard_name}, which is not configured"
                ),
            });
        }
        for shard in runner.shards() {
            let own = shard.name == shard_name;
            if !moved && !own {
                continue;
            }
            // The `restored` row needs the shard's current archive_log (as `run` migrates first).
            if migrated.insert(shard.name.clone()) {
                runner.migrate(shard).await?;
            }
            let routes_here = |pid: &str| router.shard_for(pid) == shard.index;
            let (matched, inserted) =
                restore_object(runner, shard, &st.last, req, restore_id, &routes_here, own).await?;
            if matched == 0 && !own {
                continue;
            }
            let t = tally.shards.entry(shard.name.clone()).or_default();
            t.0 += matched;
            t.1 += inserted;
            tracing::info!(shard = %shard.name, from_shard = %shard_name, object = %path, matched, inserted, skipped = matched - inserted, "restored");
            crate::metrics::restored(&shard.name, inserted);
            report.matched += matched;
            report.inserted += inserted;
            report.skipped += matched - inserted;
        }
        report.objects += 1;
        tally.read += 1;
        if tally.objects.len() < LISTED {
            tally.objects.push(json!({
                "object": path,
                "shard": shard_name,
                "rows": r.rows,
                "checksum": r.checksum,
            }));
        }
    }
    Ok(())
}
