//! `status`: per shard, the chunks waiting to be archived and the archive log's summary; for
//! the archive, the live objects of the manifest (and how many of them still have a name that
//! Arrow, pandas and Spark skip: `archiver migrate-archive` renames them).

use serde_json::{json, Value};

use crate::error::Result;
use crate::export::catalog;
use crate::runner::Runner;
use crate::state::log;
use crate::state::manifest;
use crate::storage::layout;

/// The status document (JSON).
///
/// # Errors
/// Only when the manifest cannot be read; an unreachable shard is reported in the document.
pub async fn status(runner: &Runner, older_than: std::time::Duration) -> Result<Value> {
    let mut shards = Vec::new();
    for shard in runner.shards() {
        let one = async {
            let obj = shard.client().await?;
            let c: &tokio_postgres::Client = &obj;
            let aged = catalog::aged_chunks(c, &shard.name, older_than).await?;
            let summary = log::summary(c, &shard.name).await?;
            Ok::<Value, crate::Error>(json!({
                "shard": shard.name,
                "reachable": true,
                "aged_chunks_waiting": aged.len(),
                "aged_rows_estimate": aged.iter().map(|c| c.est_rows.max(0)).sum::<i64>(),
                "aged_bytes_on_disk": aged.iter().map(|c| c.bytes).sum::<i64>(),
                "log": summary,
            }))
        };
        shards.push(one.await.unwrap_or_else(
            |e| json!({"shard": shard.name, "reachable": false, "error": e.to_string()}),
        ));
    }
    let entries = manifest::read_all(runner.archive()).await?;
    let objects = manifest::objects(&entries);
    let live: Vec<_> = objects.values().filter(|s| s.is_live()).collect();
    Ok(json!({
        "root": runner.archive().root,
        "shards": shards,
        "archive": {
            "manifest_entries": entries.len(),
            "live_objects": live.len(),
            "live_rows": live.iter().filter_map(|s| s.last.row.rows).sum::<i64>(),
            "live_bytes": live.iter().filter_map(|s| s.last.row.bytes).sum::<i64>(),
            "pending_objects": objects.values().filter(|s| s.is_pending()).count(),
            "hidden_name_objects": live.iter().filter(|s| layout::is_hidden(&s.path)).count(),
        }
    }))
}
