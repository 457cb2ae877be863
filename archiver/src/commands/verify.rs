//! `verify`: re-checks the archive against its manifest.
//!
//! - every live object (newest manifest entry `verified` or `dropped`) must exist, be
//!   readable Parquet and match the entry's size, rows, checksum and ts range, and, for one of
//!   file format version 2, its source ranges; an object of version 1 (seven columns) is
//!   checked with the checksum encoding it was written with ([`crate::export::checksum`])
//!   (with `--quick`: exist with the recorded size);
//! - every Parquet object under `measurements/` must be known to the manifest (an unknown
//!   one would be counted by readers);
//! - objects of unfinished attempts are reported, not counted as problems: the next `run`
//!   adopts or deletes them; so are, on a local root, the staging files (`<name>#<n>`) of
//!   their interrupted uploads, which object_store's listing hides but folder readers open;
//!   a staging file of any other object is unknown;
//! - the old name of an object `migrate-archive` renamed must be gone: one still there (a
//!   migration killed before its last step) is a problem, since readers count its rows twice
//!   and only another `migrate-archive` deletes it;
//! - live objects under a name Arrow, pandas and Spark skip (an archive written before the
//!   `part-…` layout, [`crate::storage::layout`]) are reported, not counted as problems: they are
//!   intact, and `migrate-archive` renames them.
//!
//! Log rows not yet mirrored are mirrored first, on the shards that can be reached (after
//! their pending schema migrations, as `run` does).

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use std::collections::BTreeSet;

use crate::error::Result;
use crate::export::checksum::Algorithm;
use crate::runner::Runner;
use crate::state::manifest;
use crate::storage::layout;
use crate::storage::readback;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Live objects checked and found good.
    pub good: usize,
    /// Live objects missing.
    pub missing: Vec<String>,
    /// Live objects unreadable or not matching the manifest.
    pub corrupt: Vec<String>,
    /// Parquet objects the manifest does not know.
    pub unknown: Vec<String>,
    /// Objects of unfinished attempts still present.
    pub pending: Vec<String>,
    /// Old names of renamed objects still present (readers count them twice).
    pub renamed_leftovers: Vec<String>,
    /// Live objects whose name Arrow, pandas and Spark skip (rename with `migrate-archive`).
    pub hidden_names: Vec<String>,
}

impl Report {
    /// Missing + corrupt + unknown objects and leftovers of renames.
    pub fn problems(&self) -> usize {
        self.missing.len() + self.corrupt.len() + self.unknown.len() + self.renamed_leftovers.len()
    }
}

/// Checks the archive.
///
/// # Errors
/// Only when the manifest cannot be listed or read; problems with objects are in the report.
pub async fn verify(runner: &Runner, quick: bool) -> Result<Report> {
    let archive = runner.archive();
    for shard in runner.shards() {
        let mirrored = async {
            runner.migrate(shard).await?;
            let c = shard.client().await?;
            manifest::mirror_pending(archive, &**c, &shard.name).await
        };
        let mirrored = mirrored.await;
        if let Err(e) = mirrored {
            tracing::warn!(shard = %shard.name, error = %e, "could not mirror pending log rows");
        }
    }
    let entries = manifest::read_all(archive).await?;
    let objects = manifest::objects(&entries);
    let mut report = Report::default();
    let mut known = BTreeSet::new();
    for ((shard, path), st) in &objects {
        known.insert(path.clone());
        let p = Path::from(path.as_str());
        if st.is_renamed_away() {
            if archive.store.head(&p).await.is_ok() {
                tracing::error!(%shard, object = %path, new = ?st.last.row.object_path, "old name of a renamed object still present (readers count it twice); run migrate-archive");
                report.renamed_leftovers.push(path.clone());
            }
            continue;
        }
        if st.is_pending() {
            if archive.store.head(&p).await.is_ok() {
                tracing::warn!(%shard, object = %path, "object of an unfinished attempt; the next run adopts or deletes it");
                report.pending.push(path.clone());
            }
            continue;
        }
        if !st.is_live() {
            continue;
        }
        let checked = if quick {
            match archive.store.head(&p).await {
                Ok(m) if Some(m.size as i64) == st.last.row.bytes => Ok(()),
                Ok(m) => Err(format!(
                    "size {} bytes, recorded {:?}",
                    m.size, st.last.row.bytes
                )),
                Err(e) => Err(e.to_string()),
            }
        } else {
            match readback::read(archive, &p, Algorithm::of(st.last.row.checksum.as_deref())).await
            {
                Ok(rb) => readback::compare(path, &rb, &st.last.row).map_err(|e| e.to_string()),
                Err(crate::Error::Store(object_store::Error::NotFound { .. })) => {
                    Err("not found".to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        };
        if layout::is_hidden(path) {
            report.hidden_names.push(path.clone());
        }
        match checked {
            Ok(()) => report.good += 1,
            Err(why) => {
                let gone = archive.store.head(&p).await.is_err();
                tracing::error!(%shard, object = %path, why, missing = gone, "archived object is bad");
                if gone {
                    report.missing.push(path.clone());
                } else {
                    report.corrupt.push(path.clone());
                }
            }
        }
    }
    let data: Vec<Path> = archive
        .store
        .list(Some(&Path::from(layout::DATA_DIR)))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for p in data {
        if !known.contains(p.as_ref()) {
            tracing::error!(object = %p, "object not in the manifest (readers would count it)");
            report.unknown.push(p.to_string());
        }
    }
    let pending: BTreeSet<&str> = objects
        .values()
        .filter(|s| s.is_pending())
        .map(|s| s.path.as_str())
        .collect();
    for (file, object) in archive.staging_files(layout::DATA_DIR)? {
        if pending.contains(object.as_str()) {
            tracing::warn!(
                file,
                "staging file of an unfinished attempt's upload; the next run deletes it"
            );
            report.pending.push(file);
        } else {
            tracing::error!(file, object, "staging file of an upload to an object that is not pending (folder readers would open it)");
            report.unknown.push(file);
        }
    }
    if !report.hidden_names.is_empty() {
        tracing::warn!(
            objects = report.hidden_names.len(),
            "live objects under names that pyarrow.dataset, pandas and Spark skip as hidden; `archiver migrate-archive` renames them"
        );
    }
    Ok(report)
}
