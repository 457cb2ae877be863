//! `verify`: re-checks the archive against its manifest.
//!
//! - every live object (newest manifest entry `verified` or `dropped`) must exist, be
//!   readable Parquet and match the entry's size, rows, checksum and ts range (with
//!   `--quick`: exist with the recorded size);
//! - every Parquet object under `measurements/` must be known to the manifest (an unknown
//!   one would be counted by readers);
//! - objects of unfinished attempts are reported, not counted as problems: the next `run`
//!   adopts or deletes them.
//!
//! Log rows not yet mirrored are mirrored first, on the shards that can be reached.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use std::collections::BTreeSet;

use crate::error::Result;
use crate::layout;
use crate::manifest;
use crate::readback;
use crate::run::Runner;

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
}

impl Report {
    /// Missing + corrupt + unknown objects.
    pub fn problems(&self) -> usize {
        self.missing.len() + self.corrupt.len() + self.unknown.len()
    }
}

/// Checks the archive.
///
/// # Errors
/// Only when the manifest cannot be listed or read; problems with objects are in the report.
pub async fn verify(runner: &Runner, quick: bool) -> Result<Report> {
    let archive = runner.archive();
    for shard in runner.shards() {
        let mirrored = match shard.client().await {
            Ok(c) => manifest::mirror_pending(archive, &**c, &shard.name).await,
            Err(e) => Err(e.into()),
        };
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
            match readback::read(archive, &p).await {
                Ok(rb) => readback::compare(path, &rb, &st.last.row).map_err(|e| e.to_string()),
                Err(crate::Error::Store(object_store::Error::NotFound { .. })) => {
                    Err("not found".to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        };
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
    Ok(report)
}
