//! Fault injection for the crash tests (hidden, not a flag; deliberately not `VITALSINK_…`,
//! which the configuration loader would take for a configuration key): environment variable
//! `ARCHIVER_CRASH_AT=mid-upload|after-upload|after-verify|after-copy|after-rename-log` makes
//! the process call `std::process::abort` at that point of the first chunk (or, for
//! `migrate-archive`, object) that reaches it, exactly as if it had been killed there: no
//! destructor, no flush, no log row after the point.
//!
//! - `mid-upload`: the multipart upload is open and at least one part
//!   (`archive.part_size_bytes`) has been handed to it, the object not completed;
//! - `after-upload`: the object is complete, its `written` log row not yet inserted;
//! - `after-verify`: the `verified` row is committed, the chunk not yet dropped;
//! - `after-copy` (`migrate-archive`): the object is copied to its new name, the copy not yet
//!   verified nor logged;
//! - `after-rename-log` (`migrate-archive`): the `renamed` row is committed and mirrored, the
//!   old name not yet deleted.

use std::time::Duration;

/// Environment variable naming the crash point.
pub const ENV: &str = "ARCHIVER_CRASH_AT";

/// A point where the process may be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// During the upload of the Parquet object.
    MidUpload,
    /// After the upload completed, before it is logged as written.
    AfterUpload,
    /// After verification is logged, before the chunk is dropped.
    AfterVerify,
    /// After an object was copied to its new name, before the copy is verified.
    AfterCopy,
    /// After the rename is logged and mirrored, before the old name is deleted.
    AfterRenameLog,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::MidUpload => "mid-upload",
            CrashPoint::AfterUpload => "after-upload",
            CrashPoint::AfterVerify => "after-verify",
            CrashPoint::AfterCopy => "after-copy",
            CrashPoint::AfterRenameLog => "after-rename-log",
        }
    }
}

/// The crash point set in the environment, if any.
pub fn configured() -> Option<CrashPoint> {
    let v = std::env::var(ENV).ok()?;
    [
        CrashPoint::MidUpload,
        CrashPoint::AfterUpload,
        CrashPoint::AfterVerify,
        CrashPoint::AfterCopy,
        CrashPoint::AfterRenameLog,
    ]
    .into_iter()
    .find(|p| p.name() == v)
}

/// Aborts the process if `point` is the configured crash point. For `mid-upload`, waits a
/// moment first so that the parts already handed to the upload reach the store.
pub async fn maybe_crash(point: CrashPoint) {
    if configured() == Some(point) {
        if point == CrashPoint::MidUpload {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::error!(
            point = point.name(),
            "fault injection: aborting the process"
        );
        std::process::abort();
    }
}
