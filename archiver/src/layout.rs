//! Object paths inside the archive root (Hive-style, so that DuckDB's
//! `read_parquet('ROOT/measurements/**/*.parquet', hive_partitioning = true)` sees `date` and
//! `shard` columns and prunes files by them):
//!
//! ```text
//! measurements/date=YYYY-MM-DD/shard=<shard>/<chunk_name>-<attempt>.parquet
//! manifest/shard=<shard>/<log id, 20 digits>-<attempt>-<step>.json
//! ```
//!
//! `date` is the UTC day the chunk's time range starts (with the default 1-day chunk interval,
//! TimescaleDB aligns chunks to UTC days, so it is the day of every row in the file). The
//! attempt id is new for every try of a chunk, so a chunk re-created by late data, or a retry
//! after a crash, always gets a new file name and never overwrites an archived one.

use chrono::{DateTime, Utc};
use object_store::path::Path;

/// Top folder of the data files.
pub const DATA_DIR: &str = "measurements";
/// Top folder of the manifest.
pub const MANIFEST_DIR: &str = "manifest";

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
        .join(format!("{chunk_name}-{attempt}.parquet"))
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
            "measurements/date=2026-01-02/shard=shard0/_hyper_1_5_chunk-A.parquet"
        );
        assert_eq!(
            manifest_entry("shard1", 42, "A", "written").as_ref(),
            "manifest/shard=shard1/00000000000000000042-A-written.json"
        );
        assert_ne!(new_attempt(), new_attempt());
    }
}
