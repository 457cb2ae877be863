//! The engine: a DataFusion session with the `measurements` table registered, its memory
//! bounded by a fair spilling pool (sorts and aggregations spill to the OS temporary
//! directory; an operator that cannot spill fails with DataFusion's "resources exhausted"
//! error naming the pool, never by growing past the limit).

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::table::Measurements;

/// Engine limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory pool for the query's operators, bytes.
    pub memory_bytes: usize,
    /// Concurrent partitions (DataFusion's `target_partitions`).
    pub partitions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            partitions: 4,
        }
    }
}

/// A session over `cfg`'s shards and archive.
///
/// # Errors
/// [`Error::Archive`] when the archive root cannot be opened; engine errors.
pub fn session(cfg: &Config, limits: Limits) -> Result<SessionContext> {
    let archive = vitalsink_archiver::storage::store::open(&cfg.archive)
        .map_err(|e| Error::Archive(e.to_string()))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_bytes)))
        .build_arc()?;
    let url = url::Url::parse(crate::archive_scan::STORE_URL)
        .map_err(|e| Error::Archive(e.to_string()))?;
    runtime.register_object_store(&url, archive.store.clone());
    let mut config = SessionConfig::new()
        .with_target_partitions(limits.partitions.max(1))
        .with_information_schema(true);
    // Each sort holds this much back for merging its spill files. DataFusion's default
    // (10 MiB) assumes a large pool; with a small one, four partitions' sorts would take it
    // all before spilling once. A sixteenth of the pool, at most the default.
    let opts = config.options_mut();
    opts.execution.sort_spill_reservation_bytes =
        (limits.memory_bytes / 16).min(opts.execution.sort_spill_reservation_bytes);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_table(
        "measurements",
        Arc::new(Measurements::new(cfg.clone(), Some(archive.store))),
    )?;
    Ok(ctx)
}

/// Runs `sql` and collects the result (for the CLI and tests; the Flight SQL server streams
/// instead).
///
/// # Errors
/// The engine's error for invalid SQL or an unknown column; [`Error::Shard`] naming a shard
/// that does not answer.
pub async fn collect(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(unwrap_external)?;
    df.collect().await.map_err(unwrap_external)
}

/// Our own errors come back wrapped by the engine; unwrap them so messages stay short (a
/// shard that does not answer stays [`Error::Shard`]).
pub fn unwrap_external(e: datafusion::error::DataFusionError) -> Error {
    match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(m) => Error::Memory(m.clone()),
        datafusion::error::DataFusionError::External(inner) => {
            match inner.downcast_ref::<Error>() {
                Some(Error::Shard { shard, message }) => Error::Shard {
                    shard: shard.clone(),
                    message: message.clone(),
                },
                _ => Error::Engine(e),
            }
        }
        _ => Error::Engine(e),
    }
}
