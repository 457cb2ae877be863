//! `migrate-archive [--dry-run]`: brings the objects of an archive written before the current
//! [`crate::storage::layout`] (chunk-named `_hyper_1_5_chunk-<attempt>.parquet`, which Arrow, pandas and
//! Spark skip as hidden) to their current names, keeping each object's verification trail.
//!
//! Per shard, under the same advisory lock as `run` (so the two never work on one shard at
//! once), after mirroring the log rows not yet in the manifest: every attempt whose newest row
//! is `dropped` (or an earlier `renamed`) and whose recorded path is not the current name
//! ([`layout::data_object`] of the recorded shard, chunk, range start and attempt) is
//! 1. copied to the new name (server-side: S3 `CopyObject`, a hard link on a local directory;
//!    the old object must first have its recorded size; a copy a killed run left is kept if
//!    it matches, else deleted first);
//! 2. read back under the new name and compared with the record exactly as `verify` does
//!    (size, rows, checksum, ts range, footer); a copy that does not match is deleted and the
//!    object left as it was;
//! 3. logged as a `renamed` row (new path, `renamed_from` = old path, the record's bytes, rows,
//!    checksum and ts range) and mirrored to the manifest; the earlier rows and manifest entries
//!    stay as they are, so the trail reads `planned, written, verified, dropped, renamed`;
//! 4. deleted under the old name.
//!
//! Killed at any point, it is resumed by running it again: before 3 the new name is unknown
//! to the manifest (`verify` reports it as unknown) and is copied again; after 3 the attempt's
//! newest row is `renamed`, and the old name, if still there (`verify` reports it as a
//! leftover), is deleted once the new one is checked to exist with the recorded size. A second
//! complete run renames nothing. Attempts not finished yet (`planned`, `written`, `verified`:
//! the chunk is still in its shard) are left alone and reported as waiting: the next `run`
//! adopts or discards them under their recorded names, after which `migrate-archive` renames
//! what was dropped.
//!
//! Objects are renamed as they are, never rewritten: an object of file format version 1 (seven
//! columns, archived before the provenance columns; [`crate::export::format`]) stays version 1
//! under its new name, is checked with the checksum encoding it was written with, and its
//! `renamed` entry says `format_version` 1. Readers fill its missing columns with NULL.
//!
//! **Audit.** A run that renamed objects or deleted old names (not `--dry-run`) appends one
//! `archive.migrate` entry ([`action::ARCHIVE_MIGRATE`]) to the trail on the map shard, with
//! the reason of `--reason`; its `details` ([`details`]): `renamed` (count), `renames` (up to
//! [`LISTED`] of them: shard, from, to), `old_names_deleted` (count) and `old_names` (up to
//! [`LISTED`]), `current`, `waiting`, `failed` and `busy_shards` (counts), `run_id`. The
//! objects' content is unchanged (each copy was read back and matched its recorded rows and
//! checksum before the old name went). A run that changed nothing appends nothing.

use serde::Serialize;
use serde_json::json;
use vitalsink_common::audit::{self, action, Record};

use crate::error::{Error, Result};
use crate::runner::Runner;
use crate::storage::layout;

mod job;
use job::Job;

/// One object moved (or, with `--dry-run`, to be moved).
#[derive(Debug, Clone, Serialize)]
pub struct Rename {
    /// Shard the object came from.
    pub shard: String,
    /// Old path.
    pub from: String,
    /// New path.
    pub to: String,
}

/// Something that could not be migrated.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Shard.
    pub shard: String,
    /// The object's recorded path (none when the whole shard failed).
    pub object: Option<String>,
    /// Why.
    pub error: String,
}

/// What `migrate-archive` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// Objects renamed (with `--dry-run`: that would be).
    pub renamed: Vec<Rename>,
    /// Old names of renames logged earlier, deleted now (a migration killed after logging;
    /// with `--dry-run`: that would be).
    pub old_names_deleted: Vec<String>,
    /// Archived objects already under their current name.
    pub current: usize,
    /// Objects of unfinished attempts under an old name: left for the next `run`, then
    /// `migrate-archive` again.
    pub waiting: Vec<String>,
    /// Objects or shards that could not be migrated.
    pub failed: Vec<Failure>,
    /// Shards skipped because an archiver is working on them.
    pub busy_shards: Vec<String>,
    /// Objects under an old name that a dataset lock's newest revision names: kept where they
    /// are (`vitalsink_common::datalock`; renaming would delete what the lock reads).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by_lock: Vec<String>,
}

impl Report {
    /// Objects and shards not migrated yet: failed, waiting and busy.
    pub fn incomplete(&self) -> usize {
        self.failed.len() + self.waiting.len() + self.busy_shards.len()
    }
}

/// Renames and old names listed by name in the audit entry (the counts cover all).
pub const LISTED: usize = 100;

/// The `details` of a run's audit entry (module docs).
pub fn details(report: &Report, run_id: &str) -> serde_json::Value {
    json!({
        "run_id": run_id,
        "renamed": report.renamed.len(),
        "renames": report.renamed.iter().take(LISTED).collect::<Vec<_>>(),
        "old_names_deleted": report.old_names_deleted.len(),
        "old_names": report.old_names_deleted.iter().take(LISTED).collect::<Vec<_>>(),
        "current": report.current,
        "waiting": report.waiting.len(),
        "failed": report.failed.len(),
        "busy_shards": report.busy_shards.len(),
    })
}

/// Renames every finished object of every shard that is not under its current name, then
/// appends the run's audit entry (module docs).
///
/// # Errors
/// [`Error::Common`] when objects were renamed but the audit entry could not be appended;
/// otherwise none of its own: failures are in the report (the command exits 1 on
/// [`Report::incomplete`]).
pub async fn migrate_archive(runner: &Runner, dry_run: bool) -> Result<Report> {
    let run_id = layout::new_attempt();
    tracing::info!(%run_id, root = %runner.archive().root, dry_run, "migrate-archive");
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let held = match runner.shards().first() {
        Some(map) => vitalsink_common::datalock::referenced(map).await?,
        None => Default::default(),
    };
    for shard in runner.shards() {
        let job = Job {
            runner,
            shard: &shard.name,
            run_id: &run_id,
            dry_run,
            held: &held,
        };
        if let Err(e) = job.shard(shard, &mut report).await {
            tracing::error!(shard = %shard.name, error = %e, "shard not migrated");
            report.failed.push(Failure {
                shard: shard.name.clone(),
                object: None,
                error: e.to_string(),
            });
        }
    }
    tracing::info!(
        renamed = report.renamed.len(),
        old_names_deleted = report.old_names_deleted.len(),
        current = report.current,
        incomplete = report.incomplete(),
        dry_run,
        "migrate-archive done"
    );
    let changed = !report.renamed.is_empty() || !report.old_names_deleted.is_empty();
    if let (false, true, Some(map_shard)) = (dry_run, changed, runner.shards().first()) {
        let rec =
            Record::new(action::ARCHIVE_MIGRATE, details(&report, &run_id)).reason(runner.reason());
        let appended = audit::append(map_shard, &rec).await;
        runner.copy_trail().await;
        if let Err(e) = appended {
            return Err(Error::Common(vitalsink_common::Error::Audit(format!(
                "{} object(s) renamed and {} old name(s) deleted, but the audit entry could not \
                 be appended: {e}",
                report.renamed.len(),
                report.old_names_deleted.len()
            ))));
        }
    }
    Ok(report)
}
