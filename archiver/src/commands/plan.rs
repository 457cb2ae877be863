//! `plan`: the dry run of `run`, chunk by chunk with exact row counts and the action `run`
//! would take.

use serde::Serialize;

use crate::error::Result;
use crate::export::catalog;
use crate::runner::{held, Runner};
use crate::state::log::{self, Step};

impl Runner {
    /// The dry run: what `run` would move now, with exact row counts.
    ///
    /// # Errors
    /// A shard that cannot be reached.
    pub async fn plan(&self) -> Result<Vec<PlanItem>> {
        let mut out = Vec::new();
        for shard in self.shards() {
            let name = shard.name.as_str();
            self.migrate(shard).await?;
            let obj = shard.client().await?;
            let c: &tokio_postgres::Client = &obj;
            let windows = log::restored_windows(c, name).await?;
            for chunk in catalog::aged_chunks(c, name, self.config().archive.older_than).await? {
                let ext = catalog::extent(c, name, &chunk).await?;
                let last = log::of_chunk(c, name, &chunk)
                    .await?
                    .into_iter()
                    .rfind(|r| r.step != Step::Failed);
                let action = if held(&chunk, &windows) {
                    "held (restored range)"
                } else {
                    match last.map(|r| r.step) {
                        Some(Step::Verified) => "drop (already verified)",
                        Some(Step::Written) => "verify earlier object, then drop",
                        Some(Step::Planned) => "discard unfinished attempt, export, verify, drop",
                        _ => "export, verify, drop",
                    }
                };
                out.push(PlanItem {
                    shard: name.to_string(),
                    chunk: chunk.qualified(),
                    range_start: chunk.range_start,
                    range_end: chunk.range_end,
                    rows: ext.rows,
                    bytes_on_disk: chunk.bytes,
                    action,
                });
            }
        }
        Ok(out)
    }
}

/// One line of `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    /// Shard name.
    pub shard: String,
    /// `schema.chunk`.
    pub chunk: String,
    /// Range start.
    pub range_start: chrono::DateTime<chrono::Utc>,
    /// Range end (exclusive).
    pub range_end: chrono::DateTime<chrono::Utc>,
    /// Rows (exact count).
    pub rows: i64,
    /// Chunk size on disk incl. indexes, bytes.
    pub bytes_on_disk: i64,
    /// What `run` would do.
    pub action: &'static str,
}
