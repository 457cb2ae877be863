//! The archive's object store, from `[archive]`: a local directory (`file:///dir`, a NAS
//! mount) through `LocalFileSystem`, or any S3-compatible endpoint (`s3://bucket/prefix`)
//! through `AmazonS3` with object_store's retry policy (exponential backoff with jitter on
//! transient errors: 5xx, 429, timeouts, connection resets).
//!
//! Every path the archiver uses is relative to the root; the prefix is applied here.

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;
use vitalsink_common::config::ArchiveConfig;

use crate::error::{Error, Result};

/// The archive root: a store whose paths are relative to `root`.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The store, already prefixed with the root.
    pub store: Arc<dyn ObjectStore>,
    /// The configured root URL (`file:///…` or `s3://…`), for messages and the manifest.
    pub root: String,
}

/// Opens the archive root named by `cfg.root`; creates a local root directory if missing.
/// S3 credentials come from the `AWS_*` environment variables.
///
/// # Errors
/// [`Error::Common`] naming `archive.root` when the URL is not usable, [`Error::Store`] when
/// the store cannot be built.
pub fn open(cfg: &ArchiveConfig) -> Result<Archive> {
    let bad = |message: String| {
        Error::Common(vitalsink_common::Error::Config {
            key: "archive.root".into(),
            message,
        })
    };
    let store: Arc<dyn ObjectStore> = if let Some(dir) = cfg.root.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create {dir}: {e}")))?;
        Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true))
    } else if let Some(rest) = cfg.root.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: cfg.max_retries,
            retry_timeout: cfg.retry_timeout,
        };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&cfg.s3_region)
            .with_allow_http(cfg.s3_allow_http)
            .with_retry(retry);
        if !cfg.s3_endpoint.is_empty() {
            b = b.with_endpoint(&cfg.s3_endpoint);
        }
        let s3 = b.build()?;
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        }
    } else {
        return Err(bad("must be file:///dir or s3://bucket[/prefix]".into()));
    };
    Ok(Archive {
        store,
        root: cfg.root.clone(),
    })
}
