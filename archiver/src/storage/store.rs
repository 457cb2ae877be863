//! The archive's object store, from `[archive]`: a local directory (`file:///dir`, a NAS
//! mount) through `LocalFileSystem`, or any S3-compatible endpoint (`s3://bucket/prefix`)
//! through `AmazonS3` with object_store's retry policy (exponential backoff with jitter on
//! transient errors: 5xx, 429, timeouts, connection resets).
//!
//! Every path the archiver uses is relative to the root; the prefix is applied here.
//!
//! On a local root, `LocalFileSystem` writes an upload to a staging file beside its object,
//! `<name>#<n>`, and renames it into place when complete; a process killed mid-upload leaves
//! the staging file. object_store's listing hides such files, but pandas, pyarrow and polars
//! reading the folder do not (they would open a partial Parquet file), so deleting an object
//! here also deletes its staging files ([`Archive::delete`]) and `verify` looks for them
//! ([`Archive::staging_files`]).

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::ObjectStoreExt;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use std::path::PathBuf;
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
    /// For a local root, its directory (where staging files can be seen).
    pub local_dir: Option<PathBuf>,
}

/// Whether `file` is a staging file of `LocalFileSystem` (`<name>#<digits>`); returns `name`.
fn staged_base(file: &str) -> Option<&str> {
    let (base, n) = file.rsplit_once('#')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

impl Archive {
    /// Deletes the object at `path` (absent is fine) and, on a local root, the staging files
    /// of uploads to it that a killed process left.
    ///
    /// # Errors
    /// [`Error::Store`], [`Error::Io`].
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let file = dir.join(path.as_ref());
        let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
            return Ok(());
        };
        let name = name.to_string_lossy();
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            let e = e?;
            if staged_base(&e.file_name().to_string_lossy()) == Some(&*name) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(file = %e.path().display(), "deleted the staging file of an interrupted upload")
                    }
                    Err(x) if x.kind() == std::io::ErrorKind::NotFound => {}
                    Err(x) => return Err(x.into()),
                }
            }
        }
        Ok(())
    }

    /// On a local root, every staging file under `dir` (a path relative to the root), as
    /// (staging file, the object it was uploading), both relative to the root; nothing on S3,
    /// where an incomplete multipart upload is never visible.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn staging_files(&self, dir: &str) -> Result<Vec<(String, String)>> {
        let Some(root) = &self.local_dir else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut todo = vec![root.join(dir)];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for e in entries {
                let p = e?.path();
                if p.is_dir() {
                    todo.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().to_string();
                if let Some(base) = staged_base(&rel) {
                    out.push((rel.clone(), base.to_string()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
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
    let mut local_dir = None;
    let store: Arc<dyn ObjectStore> = if let Some(dir) = cfg.root.strip_prefix("file://") {
        local_dir = Some(PathBuf::from(dir));
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
        let mut b = AmazonS3Builder::from_env();
        if let Some(ca) = &cfg.s3_ca_file {
            // A private CA for an HTTPS endpoint, trusted beside the system's roots. (This
            // replaces client options read from the environment, hence before the rest.)
            let bad_ca = |message: String| {
                Error::Common(vitalsink_common::Error::Config {
                    key: "archive.s3_ca_file".into(),
                    message: format!("{}: {message}", ca.display()),
                })
            };
            let pem = std::fs::read(ca).map_err(|e| bad_ca(e.to_string()))?;
            let certs = object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad_ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad_ca("no certificate in the file".into()));
            }
            let mut opts = object_store::ClientOptions::new();
            for c in certs {
                opts = opts.with_root_certificate(c);
            }
            b = b.with_client_options(opts);
        }
        let mut b = b
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
        local_dir,
    })
}
