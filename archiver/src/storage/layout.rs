//! Object paths inside the archive root (Hive-style, so that DuckDB's
//! `read_parquet('ROOT/measurements/**/*.parquet', hive_partitioning = true)`, pandas'
//! `read_parquet('ROOT/measurements')`, `pyarrow.dataset.dataset(…, partitioning='hive')`,
//! polars' `scan_parquet(…, hive_partitioning=True)` and Spark see `date` and `shard` columns
//! and prune files by them):
//!
//! ```text
//! measurements/date=YYYY-MM-DD/shard=<shard>/part-<shard>-<chunk id>-<attempt>.parquet
//! manifest/shard=<shard>/<log id, 20 digits>-<attempt>-<step>.json
//! ```
//!
//! `date` is the UTC day the chunk's time range starts (with the default 1-day chunk interval,
//! TimescaleDB aligns chunks to UTC days, so it is the day of every row in the file). The
//! attempt id is new for every try of a chunk, so a chunk re-created by late data, or a retry
//! after a crash, always gets a new file name and never overwrites an archived one.
//!
//! No path component may start with `_` or `.`: Hadoop's `FileInputFormat` (its
//! `hiddenFileFilter`, which Spark's file index follows) and Arrow's dataset discovery
//! (`ignore_prefixes=['.', '_']` by default, used by `pyarrow.dataset` and so by pandas) skip
//! such files as hidden, and would read an archive of them as empty. Archives written before
//! this rule named each object after its chunk, `_hyper_1_5_chunk-<attempt>.parquet`; those
//! names stay valid wherever they are recorded (readers of the archive take every path from
//! the log and manifest, never from this module), and `archiver migrate-archive` renames them
//! ([`crate::commands::migrate_archive`]). The components are:
//!
//! - `date=…`, `shard=…`: start with a letter whatever the shard is called;
//! - the file name starts with `part-` (Spark's and Hive's own convention for data files);
//! - the shard name comes from the configuration, where `Config::validate` already allows only
//!   `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (`shards[i].name`); [`check_shard_name`] re-checks it
//!   for a configuration built in code, so a name can neither start a component with `_` or
//!   `.` nor add a `/`.
//!
//! The chunk id is the chunk's table name without its leading underscores, `_hyper_1_5_chunk`
//! → `hyper_1_5_chunk` ([`chunk_id`]), rather than TimescaleDB's numeric chunk id (`5`): it
//! is what `show_chunks()` and the archive log (`chunk_name`) call the chunk, so an operator
//! finds a file's chunk by name; it keeps the hypertable id; and it is derived from the
//! recorded `chunk_name` alone, which is all there is for a chunk already dropped (its row in
//! `_timescaledb_catalog.chunk` is gone), e.g. when `migrate-archive` renames its object.
//! The shard name in the file name keeps names unique when files of several shards are
//! copied into one folder.

use chrono::{DateTime, Utc};
use object_store::path::Path;

use crate::error::{Error, Result};

/// Top folder of the data files.
pub const DATA_DIR: &str = "measurements";
/// Top folder of the manifest.
pub const MANIFEST_DIR: &str = "manifest";

/// The chunk's part of a file name: its table name without leading `_` and `.`
/// (`_hyper_1_5_chunk` → `hyper_1_5_chunk`); `chunk` if nothing is left.
pub fn chunk_id(chunk_name: &str) -> &str {
    match chunk_name.trim_start_matches(['_', '.']) {
        "" => "chunk",
        id => id,
    }
}

/// Path of the Parquet object of one attempt at one chunk.
pub fn data_object(
    shard: &str,
    chunk_name: &str,
    range_start: DateTime<Utc>,
    attempt: &str,
) -> Path {
    Path::from(DATA_DIR)
        .join(format!("date={}", range_start.format("%Y-%m-%d")))
        .join(format!("shard={shard}"))
        .join(format!(
            "part-{shard}-{}-{attempt}.parquet",
            chunk_id(chunk_name)
        ))
}

/// Whether some component of `path` starts with `_` or `.`, so that Arrow datasets, pandas,
/// Spark and Hadoop skip the file (the names archives got before [`data_object`]'s rule).
pub fn is_hidden(path: &str) -> bool {
    path.split('/')
        .any(|c| c.starts_with('_') || c.starts_with('.'))
}

/// Checks that `name` can be a shard's part of object paths: the configuration's rule for
/// shard names (`vitalsink_common::measurement::is_valid_id`), which starts it with a letter
/// or digit and leaves out `/`.
///
/// # Errors
/// [`Error::Common`] naming `shards[index].name`.
pub fn check_shard_name(index: usize, name: &str) -> Result<()> {
    if vitalsink_common::measurement::is_valid_id(name) {
        return Ok(());
    }
    Err(Error::Common(vitalsink_common::Error::Config {
        key: format!("shards[{index}].name"),
        message: format!(
            "{name:?} cannot name archive objects: use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ),
    }))
}

/// Folder of one shard's manifest entries.
pub fn manifest_dir(shard: &str) -> Path {
    Path::from(MANIFEST_DIR).join(format!("shard={shard}"))
}

/// Path of the manifest entry mirroring archive-log row `log_id` of `shard`. Zero-padded so
/// that listing order is log order.
pub fn manifest_entry(shard: &str, log_id: i64, attempt: &str, step: &str) -> Path {
    manifest_dir(shard).join(format!("{log_id:020}-{attempt}-{step}.json"))
}

/// A new attempt id: UTC time to the second and 32 random bits, e.g. `20260101T020304Z-1a2b3c4d`.
pub fn new_attempt() -> String {
    format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_path_is_hive_style() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            data_object("shard0", "_hyper_1_5_chunk", t, "A").as_ref(),
            "measurements/date=2026-01-02/shard=shard0/part-shard0-hyper_1_5_chunk-A.parquet"
        );
        assert_eq!(
            manifest_entry("shard1", 42, "A", "written").as_ref(),
            "manifest/shard=shard1/00000000000000000042-A-written.json"
        );
        assert_ne!(new_attempt(), new_attempt());
    }

    #[test]
    fn no_component_is_hidden() {
        let t = Utc::now();
        for shard in ["shard0", "0", "a.b", "a_b", "a-b", "Z"] {
            check_shard_name(0, shard).unwrap();
            for chunk in ["_hyper_1_5_chunk", "__x", "._y", "_", "plain"] {
                let p = data_object(shard, chunk, t, &new_attempt());
                assert!(!is_hidden(p.as_ref()), "{p}");
            }
        }
        for bad in ["_s", ".s", "a/b", "", "a b"] {
            assert!(check_shard_name(3, bad).is_err(), "{bad:?}");
        }
        assert!(is_hidden(
            "measurements/date=2026-01-02/shard=shard0/_hyper_1_5_chunk-A.parquet"
        ));
        assert_eq!(chunk_id("_hyper_1_5_chunk"), "hyper_1_5_chunk");
        assert_eq!(chunk_id("__"), "chunk");
    }
}
