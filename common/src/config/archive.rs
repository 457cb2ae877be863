//! `[archive]`: where and how the `archiver` moves aged chunks to Parquet.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[archive]` section. Credentials are never part of it: S3 keys come from the standard
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) environment variables.
///
/// Memory of one export is bounded by configuration, never by the chunk's size: about
/// `sort_buffer_rows` rows being sorted, `3 × batch_rows` decoded rows, one encoded row group of at most `row_group_rows` rows, and
/// `part_size_bytes × (upload_concurrency + 1)` bytes of multipart upload buffers, and about
/// 3 MiB of COPY blocks per reader connection (at most 4). Each shard
/// being archived runs one export at a time with its own buffers, so the archiver's memory is
/// that bound `× shard_concurrency`; `rows_per_second` stays one limit for all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Root of the archive: `file:///absolute/dir` (a local directory or NAS mount) or
    /// `s3://bucket[/prefix]` (any S3-compatible endpoint).
    pub root: String,
    /// S3 endpoint URL, e.g. `http://127.0.0.1:18333`; empty means AWS itself.
    pub s3_endpoint: String,
    /// S3 region.
    pub s3_region: String,
    /// Allow a plain-HTTP S3 endpoint (local object stores).
    pub s3_allow_http: bool,
    /// PEM file of a private CA to trust for an HTTPS S3 endpoint, in addition to the
    /// system's roots (object_store `ClientOptions::with_root_certificate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_ca_file: Option<std::path::PathBuf>,
    /// Retention window: chunks whose time range ends before `now() - older_than` (the
    /// database's clock) are archived.
    #[serde(with = "humantime_serde")]
    pub older_than: Duration,
    /// Rows per Arrow RecordBatch while streaming a chunk out (rows).
    pub batch_rows: usize,
    /// Rows per Parquet row group (rows); one encoded row group is held in memory.
    pub row_group_rows: usize,
    /// Rows sorted in memory at once (rows, about 64 bytes each plus each distinct string
    /// once): a chunk is read unsorted, sorted by the archiver in runs of at most this many
    /// rows in all, spilled to temporary files (`TMPDIR`) and merged.
    pub sort_buffer_rows: usize,
    /// Export rate limit, rows per second over all shards of one process (0 = unlimited).
    /// Keeps archiving from starving live ingest on the shards.
    pub rows_per_second: u32,
    /// Threads that encode one export's Parquet columns at once (threads; 0 = one per CPU, at
    /// most 4; 1 = one thread, as `ArrowWriter` does). Each shard's export has its own.
    pub encode_threads: usize,
    /// Worker threads of the archiver's async runtime (threads; 0 = one per 4 CPUs, at least
    /// 1). The async side only gathers COPY messages, talks to the shards and uploads: the
    /// decoding, sorting, merging, encoding and hashing run on threads of their own. On 2 CPUs
    /// shared with the shard, 5 M rows, eleven interleaved pairs of `archiver run`: 1 thread
    /// faster than tokio's default of one per CPU in 8 (median 1.07×), with less CPU in 9 and
    /// a quarter of the voluntary context switches (README, "Benchmarks", `archive_export`).
    pub async_threads: usize,
    /// Multipart upload part size, bytes (S3 requires at least 5 MiB for all but the last).
    pub part_size_bytes: usize,
    /// Multipart parts uploaded concurrently.
    pub upload_concurrency: usize,
    /// Retries of a failed object-store request (object_store's RetryConfig: exponential
    /// backoff with jitter, only for transient errors).
    pub max_retries: usize,
    /// Give up retrying one request after this long.
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// Shards archived at once by one `run` (shards; at least 1, 1 = one after the other).
    /// Each works on its own shard under that shard's bulk advisory lock, one chunk at a time,
    /// and holds its own export buffers: memory is the per-export bound above
    /// `× shard_concurrency`, and each export reads with up to 4 connections of its own shard.
    /// `rows_per_second` is not multiplied: the shards share it.
    pub shard_concurrency: usize,
    /// `run` repeats every this long as a daemon; absent means run once (cron, systemd timer).
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            root: "file:///var/lib/vitalsink/archive".into(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_allow_http: false,
            s3_ca_file: None,
            older_than: Duration::from_secs(30 * 86_400),
            batch_rows: 65_536,
            row_group_rows: 1 << 20,
            sort_buffer_rows: 1 << 20,
            rows_per_second: 1_000_000,
            encode_threads: 0,
            async_threads: 0,
            part_size_bytes: 16 << 20,
            upload_concurrency: 4,
            max_retries: 8,
            retry_timeout: Duration::from_secs(180),
            shard_concurrency: 2,
            every: None,
        }
    }
}

impl ArchiveConfig {
    /// Checks the values; returns `(key, message)` of the first bad one.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let r = self.root.as_str();
        let ok_file = r
            .strip_prefix("file://")
            .is_some_and(|p| p.starts_with('/'));
        let ok_s3 = r
            .strip_prefix("s3://")
            .is_some_and(|p| !p.is_empty() && !p.starts_with('/'));
        if !(ok_file || ok_s3) {
            return Err((
                "archive.root",
                "must be file:///absolute/dir or s3://bucket[/prefix]",
            ));
        }
        let ep = self.s3_endpoint.as_str();
        if !(ep.is_empty() || ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(("archive.s3_endpoint", "must be an http:// or https:// URL"));
        }
        if self.older_than < Duration::from_secs(60) {
            return Err(("archive.older_than", "must be at least 1m"));
        }
        if self.batch_rows == 0 || self.batch_rows > 1 << 20 {
            return Err(("archive.batch_rows", "must be 1 to 1048576"));
        }
        if self.row_group_rows < self.batch_rows || self.row_group_rows > 1 << 24 {
            return Err((
                "archive.row_group_rows",
                "must be at least archive.batch_rows and at most 16777216",
            ));
        }
        if self.sort_buffer_rows == 0 {
            return Err(("archive.sort_buffer_rows", "must be at least 1"));
        }
        if self.encode_threads > 64 {
            return Err(("archive.encode_threads", "must be 0 (automatic) to 64"));
        }
        if self.async_threads > 64 {
            return Err(("archive.async_threads", "must be 0 (automatic) to 64"));
        }
        if self.part_size_bytes < 5 << 20 {
            return Err((
                "archive.part_size_bytes",
                "must be at least 5 MiB (S3 minimum part size)",
            ));
        }
        if self.upload_concurrency == 0 {
            return Err(("archive.upload_concurrency", "must be at least 1"));
        }
        if self.shard_concurrency == 0 {
            return Err(("archive.shard_concurrency", "must be at least 1"));
        }
        if self.every.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(("archive.every", "must be at least 1s"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        assert!(ArchiveConfig::default().check().is_ok());
        let bad = |f: fn(&mut ArchiveConfig)| {
            let mut c = ArchiveConfig::default();
            f(&mut c);
            c.check().unwrap_err().0
        };
        assert_eq!(bad(|c| c.root = "/tmp/x".into()), "archive.root");
        assert_eq!(bad(|c| c.root = "s3://".into()), "archive.root");
        assert_eq!(bad(|c| c.part_size_bytes = 1024), "archive.part_size_bytes");
        assert_eq!(bad(|c| c.row_group_rows = 10), "archive.row_group_rows");
        assert_eq!(bad(|c| c.encode_threads = 65), "archive.encode_threads");
        assert_eq!(bad(|c| c.async_threads = 65), "archive.async_threads");
        assert_eq!(bad(|c| c.every = Some(Duration::ZERO)), "archive.every");
    }
}
