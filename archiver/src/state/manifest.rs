//! The manifest in the archive root: every `archive_log` row of every shard mirrored as one
//! small JSON-lines object (one line), `manifest/shard=<shard>/<id>-<attempt>-<step>.json`
//! ([`crate::storage::layout`]). Object stores have no append, so the manifest is a folder of
//! immutable entries; listing it in name order is log order per shard.
//!
//! A row is mirrored right after it commits in the shard and then marked `in_manifest`, at
//! once ([`mirror`]) or, during `run`, in the chunk's drop transaction ([`put`]: the marks
//! cost no commit of their own); a crash in between leaves it unmarked, and the next run (or
//! `verify`) mirrors it again. The entry's content is a function of the row, so mirroring twice
//! writes the same bytes.
//!
//! Readers use the manifest to know which objects are live: an object whose newest entry is
//! `verified` or `dropped` must exist and match the entry's rows, checksum and ts range. A
//! `renamed` entry (`migrate-archive`) is the newest entry of two paths: of its
//! `object_path`, which it makes live with the same rows, checksum and ts range, and of its
//! `renamed_from`, which it retires. Every path comes from the entries, none is derived from a
//! chunk name, so objects named by any earlier layout stay readable.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::state::log::{self, LogRow, Step};
use crate::storage::layout;
use crate::storage::store::Archive;

/// One manifest entry: the shard, the file format version and the log row. An object's
/// entries of format version 2 also name the source ranges it holds (`source_ranges`, from
/// [`LogRow::source_ranges`]); entries written before have no such field and parse as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Source shard name.
    pub shard: String,
    /// Archive file format version ([`crate::export::format::FORMAT_VERSION`]): for the
    /// steps that describe an object (`written`, `verified`, `dropped`, `renamed`), the
    /// object's own (`1` without source ranges: archived before the provenance columns);
    /// for the others, the version this archiver writes.
    pub format_version: String,
    /// The mirrored `archive_log` row.
    #[serde(flatten)]
    pub row: LogRow,
}

/// Log rows mirrored per round of [`mirror_pending`].
const PAGE: i64 = 500;
/// Rounds of [`mirror_pending`] per call (bounded loop; the rest waits for the next call).
const MAX_PAGES: usize = 200;
/// Concurrent GETs when reading the manifest.
const READ_CONCURRENCY: usize = 16;

/// Writes the entry of `row` (already committed in `shard`) and marks the row mirrored.
///
/// # Errors
/// [`Error::Store`] when the put fails (the row stays unmarked and is mirrored later),
/// [`Error::Postgres`].
pub async fn mirror(
    archive: &Archive,
    c: &impl GenericClient,
    shard: &str,
    row: &LogRow,
) -> Result<()> {
    put(archive, shard, row).await?;
    log::mark_in_manifest(c, shard, &[row.id]).await
}

/// Writes the entry of `row` (already committed in `shard`) without marking the row: the
/// caller marks it later ([`log::mark_in_manifest`], in a transaction it commits anyway). Until
/// then the row counts as not mirrored, and a crash in between only makes the next
/// [`mirror_pending`] write the same bytes again.
///
/// # Errors
/// [`Error::Store`] when the put fails.
pub async fn put(archive: &Archive, shard: &str, row: &LogRow) -> Result<()> {
    let entry = Entry {
        shard: shard.to_string(),
        format_version: format_version(row).to_string(),
        row: row.clone(),
    };
    let mut line = serde_json::to_vec(&entry)?;
    line.push(b'\n');
    let path = layout::manifest_entry(shard, row.id, &row.attempt, row.step.as_str());
    archive.store.put(&path, PutPayload::from(line)).await?;
    Ok(())
}

/// The file format version of the object `row` describes ([`Entry::format_version`]).
fn format_version(row: &LogRow) -> &'static str {
    use crate::export::format::{FORMAT_VERSION, FORMAT_VERSION_V1};
    match row.step {
        Step::Written | Step::Verified | Step::Dropped | Step::Renamed
            if row.source_ranges.is_none() =>
        {
            FORMAT_VERSION_V1
        }
        _ => FORMAT_VERSION,
    }
}

/// Mirrors every log row of `shard` not yet in the manifest. Returns how many.
///
/// # Errors
/// As [`mirror`].
pub async fn mirror_pending(
    archive: &Archive,
    c: &impl GenericClient,
    shard: &str,
) -> Result<usize> {
    let mut n = 0;
    for _ in 0..MAX_PAGES {
        let rows = log::not_in_manifest(c, shard, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            mirror(archive, c, shard, r).await?;
        }
        n += rows.len();
    }
    if n > 0 {
        tracing::info!(%shard, rows = n, "mirrored log rows to the manifest");
    }
    Ok(n)
}

/// Reads every manifest entry of the archive, in path order.
///
/// # Errors
/// [`Error::Store`] when listing or a GET fails, [`Error::Manifest`] for an unparsable entry.
pub async fn read_all(archive: &Archive) -> Result<Vec<Entry>> {
    let mut paths: Vec<Path> = archive
        .store
        .list(Some(&Path::from(layout::MANIFEST_DIR)))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    paths.sort();
    let store = archive.store.clone();
    futures::stream::iter(paths)
        .map(|p| {
            let store = store.clone();
            async move {
                let body = store.get(&p).await?.bytes().await?;
                serde_json::from_slice::<Entry>(&body).map_err(|e| Error::Manifest {
                    object: p.to_string(),
                    message: e.to_string(),
                })
            }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// State of one object according to the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectState {
    /// The object's path (relative to the archive root).
    pub path: String,
    /// The object's newest entry (restores left out); for a renamed object's old path, the
    /// `renamed` entry, whose `object_path` is the new one.
    pub last: Entry,
}

impl ObjectState {
    /// Verified (and maybe dropped), or the new name of a renamed object: the object must
    /// exist and match.
    pub fn is_live(&self) -> bool {
        match self.last.row.step {
            Step::Verified | Step::Dropped => true,
            Step::Renamed => !self.is_renamed_away(),
            _ => false,
        }
    }

    /// The old name of an object that `migrate-archive` renamed: it must be gone (while it is
    /// not, readers count the rows twice).
    pub fn is_renamed_away(&self) -> bool {
        self.last.row.step == Step::Renamed
            && self.last.row.object_path.as_deref() != Some(self.path.as_str())
    }

    /// An unfinished attempt (planned, written or failed, not yet discarded): the next run
    /// adopts or deletes it.
    pub fn is_pending(&self) -> bool {
        matches!(
            self.last.row.step,
            Step::Planned | Step::Written | Step::Failed
        )
    }
}

/// Each object's newest entry, keyed by (shard, object path); a `renamed` entry counts for
/// its new and its old path.
pub fn objects(entries: &[Entry]) -> BTreeMap<(String, String), ObjectState> {
    let mut out: BTreeMap<(String, String), ObjectState> = BTreeMap::new();
    for e in entries {
        let Some(path) = &e.row.object_path else {
            continue;
        };
        if e.row.step == Step::Restored {
            continue;
        }
        let old = e
            .row
            .renamed_from
            .as_ref()
            .filter(|_| e.row.step == Step::Renamed);
        for p in std::iter::once(path).chain(old) {
            let key = (e.shard.clone(), p.clone());
            match out.get(&key) {
                Some(s) if s.last.row.id > e.row.id => {}
                _ => {
                    let state = ObjectState {
                        path: p.clone(),
                        last: e.clone(),
                    };
                    out.insert(key, state);
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(id: i64, step: Step, path: &str, from: Option<&str>) -> Entry {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let mut row = LogRow {
            id,
            run_id: "r".into(),
            attempt: "A".into(),
            hypertable: "measurements".into(),
            chunk_schema: "s".into(),
            chunk_name: "_hyper_1_1_chunk".into(),
            range_start: t,
            range_end: t,
            step,
            object_path: Some(path.into()),
            bytes: Some(10),
            rows: Some(2),
            checksum: Some("c".into()),
            min_ts: Some(t),
            max_ts: Some(t),
            detail: None,
            at: None,
            renamed_from: None,
            source_ranges: None,
        };
        row.renamed_from = from.map(str::to_string);
        Entry {
            shard: "shard0".into(),
            format_version: "1".into(),
            row,
        }
    }

    #[test]
    fn a_rename_retires_the_old_path_and_makes_the_new_one_live() {
        let entries = [
            entry(1, Step::Planned, "old", None),
            entry(2, Step::Written, "old", None),
            entry(3, Step::Verified, "old", None),
            entry(4, Step::Dropped, "old", None),
            entry(5, Step::Renamed, "new", Some("old")),
        ];
        let before = objects(&entries[..4]);
        assert!(before[&("shard0".into(), "old".into())].is_live());
        let after = objects(&entries);
        let old = &after[&("shard0".into(), "old".into())];
        let new = &after[&("shard0".into(), "new".into())];
        assert!(!old.is_live() && old.is_renamed_away() && !old.is_pending());
        assert!(new.is_live() && !new.is_renamed_away());
        assert_eq!(new.last.row.rows, Some(2));
    }

    #[test]
    fn entries_without_renamed_from_read_and_write_as_before() {
        let e = entry(4, Step::Dropped, "old", None);
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("renamed_from"), "{json}");
        let back: Entry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let r = entry(5, Step::Renamed, "new", Some("old"));
        let back: Entry = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.row.renamed_from.as_deref(), Some("old"));
    }

    #[test]
    fn entries_name_their_objects_source_ranges_and_old_ones_still_parse() {
        // An entry as the archiver wrote it before the provenance columns.
        let old = r#"{"shard":"shard0","format_version":"1","id":4,"run_id":"r","attempt":"A","hypertable":"measurements","chunk_schema":"s","chunk_name":"_hyper_1_1_chunk","range_start":"1970-01-01T00:00:00Z","range_end":"1970-01-01T00:00:00Z","step":"dropped","object_path":"old","bytes":10,"rows":2,"checksum":"c","min_ts":"1970-01-01T00:00:00Z","max_ts":"1970-01-01T00:00:00Z","detail":null,"at":null}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(e, entry(4, Step::Dropped, "old", None));
        assert_eq!(format_version(&e.row), "1");
        let mut new = entry(4, Step::Dropped, "new", None);
        new.row.source_ranges = Some("vitals/0:3-9".into());
        assert_eq!(
            format_version(&new.row),
            crate::export::format::FORMAT_VERSION
        );
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""source_ranges":"vitals/0:3-9""#), "{json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), new);
    }
}
