//! `trial lock verify NAME`: re-checks every object of a lock's newest revision (or
//! `--revision N`): it exists, holds the recorded rows, and its rows hash to the recorded
//! content checksum (read back in full, as `archiver verify` does); and the rows add up to the
//! manifest's total. Exit 1 on any difference.

use serde::Serialize;
use vitalsink_archiver::export::checksum::Algorithm;
use vitalsink_archiver::storage::readback;
use vitalsink_archiver::storage::store::Archive;
use vitalsink_common::datalock;
use vitalsink_common::db::Shard;

use crate::error::{Error, Result};

/// What `lock verify` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The lock.
    pub lock: String,
    /// The revision checked.
    pub revision: i32,
    /// Objects checked.
    pub objects: usize,
    /// Rows found over all objects.
    pub rows: i64,
    /// Rows the manifest records.
    pub rows_recorded: i64,
    /// Every difference found (empty: the lock holds).
    pub problems: Vec<String>,
}

/// Checks lock `name`.
///
/// # Errors
/// [`Error::Refused`] when there is no such lock; [`Error::Common`] for the map shard.
pub async fn verify(
    archive: &Archive,
    map: &Shard,
    name: &str,
    revision: Option<i32>,
) -> Result<Report> {
    let m = datalock::load(map, name, revision)
        .await?
        .ok_or_else(|| Error::Refused {
            action: format!("verify lock {name}"),
            message: "no such lock (or revision)".into(),
        })?;
    let mut r = Report {
        lock: m.name.clone(),
        revision: m.revision,
        objects: m.objects.len(),
        rows: 0,
        rows_recorded: m.rows,
        problems: Vec::new(),
    };
    for o in &m.objects {
        let path = object_store::path::Path::from(o.path.as_str());
        match readback::read(archive, &path, Algorithm::of(Some(&o.checksum))).await {
            Err(e) => r.problems.push(format!("{}: {e}", o.path)),
            Ok(rb) => {
                r.rows += rb.summary.rows as i64;
                if rb.summary.rows as i64 != o.rows {
                    r.problems.push(format!(
                        "{}: {} rows, the lock records {}",
                        o.path, rb.summary.rows, o.rows
                    ));
                }
                if rb.summary.checksum != o.checksum {
                    r.problems.push(format!(
                        "{}: content checksum {}, the lock records {}",
                        o.path, rb.summary.checksum, o.checksum
                    ));
                }
            }
        }
    }
    if r.rows != m.rows {
        r.problems.push(format!(
            "objects hold {} rows, the manifest records {}",
            r.rows, m.rows
        ));
    }
    Ok(r)
}
