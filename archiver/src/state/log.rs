//! The shard's `archive_log` table (`schemas/sql/0003_archive_log.sql`, `0004_…`): one row per
//! step the archiver takes on a chunk. An attempt goes `planned → written → verified →
//! dropped`; an attempt that is not adopted ends `discarded` (its object deleted); `failed`
//! records an error; `restored` records a restore; `renamed` records that `migrate-archive`
//! moved a finished attempt's object to a new name (`0005_…`: the old name in
//! `renamed_from`, the attempt's earlier rows unchanged). The rows of a chunk tell a later run
//! where a crashed one stopped ([`crate::commands::run`]).
//!
//! An object of file format version 2 also names the source ranges it holds
//! ([`LogRow::source_ranges`], `vitalsink.source_ranges`) in its `written`, `verified`,
//! `dropped` (and `renamed`) rows and so in their manifest entries. The table has no column
//! of its own for it: it is kept in `detail`, which is empty in those rows otherwise, as the
//! JSON object `{"source_ranges": "…"}` (with the text of `detail` as `"detail"` if a row has
//! both); reading a row takes it apart again.

mod row;
mod store;

pub use row::{LogRow, Step};
pub use store::{
    attempts, dropped_since_trail, insert, insert_all, mark_in_manifest, not_in_manifest, of_chunk,
    restored_windows, summary, LIVE_OBJECTS_SQL,
};
