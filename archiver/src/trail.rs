//! Copies of the audit trail in the archive, beside the data (issue 26: entries are never
//! dropped with chunks; 21 CFR 11.10(e): the trail is kept as long as the records).
//!
//! ```text
//! audit/trail-<first seq, 20 digits>-<last seq, 20 digits>.jsonl
//! ```
//!
//! Each object holds consecutive entries of `audit_log` ([`vitalsink_common::audit::Entry`],
//! one JSON object per line, `details` as the exact text that was hashed), at most
//! [`PAGE`] of them. [`copy_new`] appends the entries after the highest copied one; it runs at
//! the end of every `archiver run` round and after every `trial` command. Entries never
//! change, so two copiers racing write the same bytes under the same name, or overlapping
//! ranges that agree. `trial audit verify` compares the copies with the table: an entry that
//! the table's owner removed from the end of the trail, or a chain recomputed after a change,
//! no longer matches its copy.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use vitalsink_common::audit::{self, Entry};
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};
use crate::storage::store::Archive;

/// Top folder of the trail's copies.
pub const AUDIT_DIR: &str = "audit";

/// Entries per object.
pub const PAGE: i64 = 10_000;

/// Objects written per call of [`copy_new`] (a bounded loop; the rest waits for the next call).
const MAX_OBJECTS: usize = 100;

/// The (first, last) seq of a copy's object name; `None` for another file.
pub fn parse_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.rsplit('/').next()?.strip_prefix("trail-")?;
    let stem = stem.strip_suffix(".jsonl")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The object name of entries `first..=last`.
pub fn name(first: i64, last: i64) -> Path {
    Path::from(format!("{AUDIT_DIR}/trail-{first:020}-{last:020}.jsonl"))
}

/// Every copy's (first, last, path), in name order.
///
/// # Errors
/// [`Error::Store`] when the archive cannot be listed.
pub async fn copies(archive: &Archive) -> Result<Vec<(i64, i64, Path)>> {
    let prefix = Path::from(AUDIT_DIR);
    let mut out: Vec<(i64, i64, Path)> = archive
        .store
        .list(Some(&prefix))
        .try_filter_map(|m| async move {
            Ok(parse_name(m.location.as_ref()).map(|(a, b)| (a, b, m.location)))
        })
        .try_collect()
        .await?;
    out.sort_by(|x, y| x.2.as_ref().cmp(y.2.as_ref()));
    Ok(out)
}

/// The entries of one copy.
///
/// # Errors
/// [`Error::Store`] when it cannot be read, [`Error::Common`]
/// ([`vitalsink_common::Error::Audit`]) when a line does not parse.
pub async fn read(archive: &Archive, path: &Path) -> Result<Vec<Entry>> {
    let bytes = archive.store.get(path).await?.bytes().await?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Entry>(l).map_err(|e| {
                Error::Common(vitalsink_common::Error::Audit(format!(
                    "{path}: unreadable entry: {e}"
                )))
            })
        })
        .collect()
}

/// Copies the entries of the trail on `map_shard` that follow the highest copied one; returns
/// how many were copied.
///
/// # Errors
/// [`Error::Store`], [`Error::Common`] (the map shard).
pub async fn copy_new(archive: &Archive, map_shard: &Shard) -> Result<u64> {
    let mut next = copies(archive)
        .await?
        .iter()
        .map(|c| c.1 + 1)
        .max()
        .unwrap_or(1);
    let mut copied = 0u64;
    for _ in 0..MAX_OBJECTS {
        let entries = audit::read(map_shard, next, Some(next + PAGE - 1)).await?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            break;
        };
        let mut body = Vec::with_capacity(entries.len() * 512);
        for e in &entries {
            serde_json::to_writer(&mut body, e).map_err(|e| {
                Error::Common(vitalsink_common::Error::Audit(format!(
                    "encoding a copy: {e}"
                )))
            })?;
            body.push(b'\n');
        }
        archive
            .store
            .put(&name(first.seq, last.seq), PutPayload::from(body))
            .await?;
        copied += entries.len() as u64;
        next = last.seq + 1;
        if (entries.len() as i64) < PAGE {
            break;
        }
    }
    if copied > 0 {
        tracing::info!(entries = copied, "audit trail copied to the archive");
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = name(1, 10_000);
        assert_eq!(
            p.as_ref(),
            "audit/trail-00000000000000000001-00000000000000010000.jsonl"
        );
        assert_eq!(parse_name(p.as_ref()), Some((1, 10_000)));
        assert_eq!(parse_name("audit/other.json"), None);
    }
}
