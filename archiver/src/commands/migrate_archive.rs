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

use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use serde_json::json;
use vitalsink_common::audit::{self, action, Record};
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};
use crate::export::checksum::Algorithm;
use crate::fault::{self, CrashPoint};
use crate::runner::{try_lock_shard, unlock_shard, LockSession, Runner};
use crate::state::log::{self, LogRow, Step};
use crate::state::manifest;
use crate::storage::layout;
use crate::storage::readback;

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

/// One shard's migration.
struct Job<'a> {
    runner: &'a Runner,
    shard: &'a str,
    run_id: &'a str,
    dry_run: bool,
    /// Paths some lock's newest revision names.
    held: &'a std::collections::BTreeSet<String>,
}

/// Whether `path` is `to` rewritten by erasures (`<to stem>-e<id>[-e<id>…].parquet`,
/// `trial participants erase`): its current name too.
fn is_rewrite_of(path: &str, to: &str) -> bool {
    let (Some(p), Some(t)) = (path.strip_suffix(".parquet"), to.strip_suffix(".parquet")) else {
        return false;
    };
    p.strip_prefix(t).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split("-e")
                .skip(1)
                .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            && rest.starts_with("-e")
    })
}

impl Job<'_> {
    async fn shard(&self, shard: &Shard, report: &mut Report) -> Result<()> {
        self.runner.migrate(shard).await?;
        let client = shard.client().await?;
        let c: &tokio_postgres::Client = &client;
        let session = LockSession::open(shard).await?;
        if !try_lock_shard(session.client(c), self.shard).await? {
            tracing::warn!(
                shard = self.shard,
                "an archiver is working on this shard; skipped"
            );
            report.busy_shards.push(self.shard.to_string());
            return Ok(());
        }
        let res = self.locked(c, report).await;
        unlock_shard(session.client(c), self.shard).await;
        res
    }

    async fn locked(&self, c: &tokio_postgres::Client, report: &mut Report) -> Result<()> {
        if !self.dry_run {
            manifest::mirror_pending(self.runner.archive(), c, self.shard).await?;
        }
        for row in log::attempts(c, self.shard).await? {
            let Some(path) = row.object_path.clone() else {
                continue;
            };
            let to =
                layout::data_object(self.shard, &row.chunk_name, row.range_start, &row.attempt);
            let current = path == to.as_ref() || is_rewrite_of(&path, to.as_ref());
            let done = match row.step {
                Step::Dropped | Step::Renamed => Ok(()),
                Step::Planned | Step::Written | Step::Verified => {
                    if !current {
                        tracing::warn!(shard = self.shard, object = %path, step = row.step.as_str(), "unfinished attempt under an old name: the next run finishes it, then migrate-archive again");
                        report.waiting.push(path);
                    }
                    continue;
                }
                Step::Discarded | Step::Failed | Step::Restored => continue,
            };
            let done = match (done, &row.renamed_from) {
                (Ok(()), Some(old)) if row.step == Step::Renamed && !self.held.contains(old) => {
                    self.delete_old_name(c, &row, old, report).await
                }
                (d, _) => d,
            };
            let done = match done {
                Ok(()) if current => {
                    report.current += 1;
                    Ok(())
                }
                Ok(()) if self.held.contains(&path) => {
                    tracing::warn!(shard = self.shard, object = %path, "named by a dataset lock: kept under its old name");
                    report.held_by_lock.push(path.clone());
                    Ok(())
                }
                Ok(()) => self.rename(c, &row, &path, &to, report).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::error!(shard = self.shard, object = %path, error = %e, "object not migrated");
                report.failed.push(Failure {
                    shard: self.shard.to_string(),
                    object: Some(path),
                    error: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn bad(&self, object: &str, message: String) -> Error {
        Error::Verify {
            object: object.to_string(),
            message,
        }
    }

    /// Copies `from` to `to`, checks the copy against `row`, logs `renamed`, deletes `from`.
    async fn rename(
        &self,
        c: &tokio_postgres::Client,
        row: &LogRow,
        from: &str,
        to: &Path,
        report: &mut Report,
    ) -> Result<()> {
        let done = Rename {
            shard: self.shard.to_string(),
            from: from.to_string(),
            to: to.to_string(),
        };
        if self.dry_run {
            report.renamed.push(done);
            return Ok(());
        }
        let store = &self.runner.archive().store;
        let old = Path::from(from);
        let old_there = match store.head(&old).await {
            Ok(m) if Some(m.size as i64) != row.bytes => {
                return Err(self.bad(
                    from,
                    format!(
                        "size {} bytes, recorded {:?}: not renamed (see `verify`)",
                        m.size, row.bytes
                    ),
                ));
            }
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        // A copy left by a killed run is kept if it matches; otherwise it is deleted before
        // copying again, never copied over: on a local directory the copy is a hard link,
        // and renaming a link onto another link of the same file does nothing (POSIX
        // rename(2)), which would leave LocalFileSystem's staging file `<name>#0` behind
        // for pandas and pyarrow to read.
        if let Err(earlier) = self.check_copy(to, row).await {
            if !old_there {
                return Err(self.bad(
                    from,
                    format!("missing, and {to} does not hold it either: {earlier}"),
                ));
            }
            match store.delete(to).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            store.copy(&old, to).await?;
            fault::maybe_crash(CrashPoint::AfterCopy).await;
            if let Err(e) = self.check_copy(to, row).await {
                if let Err(d) = store.delete(to).await {
                    tracing::warn!(shard = self.shard, object = %to, error = %d, "could not delete the bad copy");
                }
                return Err(self.bad(
                    from,
                    format!("the copy at {to} does not match the record, old name kept: {e}"),
                ));
            }
        }
        let mut renamed = row.next(Step::Renamed);
        renamed.run_id = self.run_id.to_string();
        renamed.object_path = Some(to.to_string());
        renamed.renamed_from = Some(from.to_string());
        renamed.detail = Some(format!("renamed from {from} to {to}"));
        let renamed = log::insert(c, self.shard, &renamed).await?;
        // The old name goes only once the manifest knows the new one; if this put fails the
        // row is mirrored by the next run, which then deletes the old name.
        manifest::mirror(self.runner.archive(), c, self.shard, &renamed).await?;
        fault::maybe_crash(CrashPoint::AfterRenameLog).await;
        match store.delete(&old).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        crate::metrics::renamed(self.shard);
        tracing::info!(shard = self.shard, chunk = %row.chunk_name, from, to = %to, rows = ?row.rows, "renamed");
        report.renamed.push(done);
        Ok(())
    }

    /// Reads `to` back and compares it with the record, as `verify` does (size, rows,
    /// checksum, ts range, footer).
    async fn check_copy(&self, to: &Path, row: &LogRow) -> Result<()> {
        let rb = readback::read(
            self.runner.archive(),
            to,
            Algorithm::of(row.checksum.as_deref()),
        )
        .await?;
        readback::compare(to.as_ref(), &rb, row)
    }

    /// After a logged rename: deletes the old name if it is still there, once the new name is
    /// checked to hold an object of the recorded size.
    async fn delete_old_name(
        &self,
        c: &tokio_postgres::Client,
        renamed: &LogRow,
        old: &str,
        report: &mut Report,
    ) -> Result<()> {
        let store = &self.runner.archive().store;
        let old_path = Path::from(old);
        match store.head(&old_path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if self.dry_run {
            report.old_names_deleted.push(old.to_string());
            return Ok(());
        }
        let new = renamed.object_path.clone().unwrap_or_default();
        match store.head(&Path::from(new.as_str())).await {
            Ok(m) if Some(m.size as i64) == renamed.bytes => {}
            other => {
                return Err(self.bad(
                    &new,
                    format!("renamed from {old}, but the new name is missing or resized ({other:?}); old name kept"),
                ))
            }
        }
        // Normally mirrored already (mirror_pending ran first); the put is idempotent.
        manifest::mirror(self.runner.archive(), c, self.shard, renamed).await?;
        match store.delete(&old_path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            shard = self.shard,
            old,
            new,
            "deleted the old name of a renamed object"
        );
        report.old_names_deleted.push(old.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_rewrite_of;

    #[test]
    fn an_erasure_rewrite_keeps_its_current_name() {
        let to = "measurements/date=2026-01-01/shard=s0/part-s0-hyper_1_1_chunk-a1.parquet";
        let e1 = "measurements/date=2026-01-01/shard=s0/part-s0-hyper_1_1_chunk-a1-e1.parquet";
        let e12 = "measurements/date=2026-01-01/shard=s0/part-s0-hyper_1_1_chunk-a1-e1-e12.parquet";
        assert!(is_rewrite_of(e1, to) && is_rewrite_of(e12, to));
        assert!(!is_rewrite_of(to, to));
        let other = "measurements/date=2026-01-01/shard=s0/part-s0-hyper_1_1_chunk-a1-x.parquet";
        assert!(!is_rewrite_of(other, to));
        let bare = "measurements/date=2026-01-01/shard=s0/part-s0-hyper_1_1_chunk-a1-e.parquet";
        assert!(!is_rewrite_of(bare, to));
    }
}
