//! The rows of the archive log as the archiver handles them: [`Step`] and [`LogRow`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::export::catalog::{Chunk, HYPERTABLE};

/// A step of the archive log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// An attempt is about to write `object_path`.
    Planned,
    /// The object was written completely (bytes, rows, checksum, min/max ts known).
    Written,
    /// The object was read back and matched the chunk.
    Verified,
    /// The chunk was dropped from the database (in the same transaction as this row).
    Dropped,
    /// Rows of the object were loaded back into the hypertable (same transaction).
    Restored,
    /// A step failed; `detail` says why.
    Failed,
    /// The attempt's object was deleted and will not be used.
    Discarded,
    /// The object was copied to `object_path`, the copy read back and matched, and the old
    /// name (`renamed_from`) deleted once this row was in the manifest. Not a step of the
    /// chunk's state machine: the chunk stays where its previous row left it (dropped).
    Renamed,
}

impl Step {
    /// The name stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Written => "written",
            Step::Verified => "verified",
            Step::Dropped => "dropped",
            Step::Restored => "restored",
            Step::Failed => "failed",
            Step::Discarded => "discarded",
            Step::Renamed => "renamed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "planned" => Step::Planned,
            "written" => Step::Written,
            "verified" => Step::Verified,
            "dropped" => Step::Dropped,
            "restored" => Step::Restored,
            "failed" => Step::Failed,
            "discarded" => Step::Discarded,
            "renamed" => Step::Renamed,
            _ => return None,
        })
    }
}

/// One row of `archive_log` (also the body of a manifest entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Row id (bigserial, per shard database); 0 before insertion.
    pub id: i64,
    /// The run that wrote it.
    pub run_id: String,
    /// Attempt id (names the object).
    pub attempt: String,
    /// Always `measurements`.
    pub hypertable: String,
    /// Chunk schema.
    pub chunk_schema: String,
    /// Chunk name.
    pub chunk_name: String,
    /// Chunk range start (for `restored`: the restore window's start).
    pub range_start: DateTime<Utc>,
    /// Chunk range end, exclusive (for `restored`: the window's end).
    pub range_end: DateTime<Utc>,
    /// The step.
    pub step: Step,
    /// Object path relative to the archive root.
    pub object_path: Option<String>,
    /// Object size, bytes.
    pub bytes: Option<i64>,
    /// Rows in the object (for `restored`: rows inserted).
    pub rows: Option<i64>,
    /// Content checksum ([`crate::export::checksum`]).
    pub checksum: Option<String>,
    /// Smallest `ts` in the object.
    pub min_ts: Option<DateTime<Utc>>,
    /// Largest `ts` in the object.
    pub max_ts: Option<DateTime<Utc>>,
    /// Free text: an error, or a restore's parameters as JSON.
    pub detail: Option<String>,
    /// When the row was written (database clock).
    pub at: Option<DateTime<Utc>>,
    /// For `renamed`: the object's previous path (absent from manifest entries of other
    /// steps, so that they read exactly as before schema version 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// The object's lineage, `vitalsink.source_ranges` (`topic/partition:first-last,…`;
    /// empty when no row has any); `None` for an object of file format version 1, for rows of
    /// steps that do not describe an object, and in manifest entries written before it
    /// (absent there too when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<String>,
}

impl LogRow {
    /// A row for `chunk` at `step`, without object details.
    pub fn new(run_id: &str, attempt: &str, chunk: &Chunk, step: Step) -> Self {
        Self {
            id: 0,
            run_id: run_id.into(),
            attempt: attempt.into(),
            hypertable: HYPERTABLE.into(),
            chunk_schema: chunk.schema.clone(),
            chunk_name: chunk.name.clone(),
            range_start: chunk.range_start,
            range_end: chunk.range_end,
            step,
            object_path: None,
            bytes: None,
            rows: None,
            checksum: None,
            min_ts: None,
            max_ts: None,
            detail: None,
            at: None,
            renamed_from: None,
            source_ranges: None,
        }
    }

    /// The same attempt at another step (object details kept, detail and `renamed_from`
    /// cleared; the source ranges kept for the steps that describe the object: `written`,
    /// `verified`, `dropped`, `renamed`).
    pub fn next(&self, step: Step) -> Self {
        let keeps = matches!(
            step,
            Step::Written | Step::Verified | Step::Dropped | Step::Renamed
        );
        Self {
            id: 0,
            step,
            detail: None,
            at: None,
            renamed_from: None,
            source_ranges: self.source_ranges.clone().filter(|_| keeps),
            ..self.clone()
        }
    }
}
