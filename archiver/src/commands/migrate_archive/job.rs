//! One shard's part of `migrate-archive` ([`super`]): each finished attempt whose recorded
//! name is not the current one is copied, read back, logged as `renamed` and deleted under the
//! old name.

use object_store::path::Path;
use object_store::ObjectStoreExt;
use vitalsink_common::db::Shard;

use super::{Failure, Rename, Report};
use crate::error::{Error, Result};
use crate::export::checksum::Algorithm;
use crate::fault::{self, CrashPoint};
use crate::runner::{try_lock_shard, unlock_shard, LockSession, Runner};
use crate::state::log::{self, LogRow, Step};
use crate::state::manifest;
use crate::storage::layout;
use crate::storage::readback;

/// One shard's migration.
pub(super) struct Job<'a> {
    pub(super) runner: &'a Runner,
    pub(super) shard: &'a str,
    pub(super) run_id: &'a str,
    pub(super) dry_run: bool,
    /// Paths some lock's newest revision names.
    pub(super) held: &'a std::collections::BTreeSet<String>,
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
    pub(super) async fn shard(&self, shard: &Shard, report: &mut Report) -> Result<()> {
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
