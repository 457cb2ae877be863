//! The engine: DataFusion over the `measurements` table (live, or a dataset lock's with
//! [`Engine::locked`]) and the trial tables ([`crate::trial_tables`]), its memory bounded by
//! a fair spilling pool shared by every statement (sorts and aggregations spill to the OS
//! temporary directory; an operator that cannot spill fails with DataFusion's "resources
//! exhausted" error naming the pool, never by growing past the limit), reads only.
//!
//! Follow one statement: [`Engine::plan`] parses it, [`policy::check`]s that it is a read
//! (else [`Error::Refused`], before anything is planned), plans it against the
//! [`sandbox`]'s read-only catalog, checks the plan again with DataFusion's `SQLOptions`,
//! and hands back a `DataFrame` bound to a session state of its own: a statement changes
//! nothing another one sees.

pub mod functions;
pub mod policy;
pub mod sandbox;
pub mod yielding;

use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SessionStateDefaults;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::locked::LockedMeasurements;
use crate::table::Measurements;

/// The configured archive's store.
fn open_archive(cfg: &Config) -> Result<Arc<dyn ObjectStore>> {
    vitalsink_archiver::storage::store::open(&cfg.archive)
        .map(|a| a.store)
        .map_err(|e| Error::Archive(e.to_string()))
}

/// Default of `--statement-timeout`: 10 min. The slowest statement of the README's benchmark
/// at 10 M rows took 2.5 s; a daily mean over a 100 M-row trial takes tens of seconds.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Engine limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory pool for the operators of every running statement together, bytes.
    pub memory_bytes: usize,
    /// Concurrent partitions (DataFusion's `target_partitions`).
    pub partitions: usize,
    /// How long one statement may run, planning to last row.
    pub statement_timeout: Duration,
    /// Whether aggregates run on the shards ([`crate::aggregate`]).
    pub aggregate_pushdown: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            partitions: 4,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            aggregate_pushdown: true,
        }
    }
}

/// The engine of one deployment: a template session state every statement gets a copy of.
#[derive(Debug)]
pub struct Engine {
    state: SessionState,
    limits: Limits,
}

impl Engine {
    /// The engine over `cfg`'s shards and archive.
    ///
    /// # Errors
    /// [`Error::Archive`] when the archive root cannot be opened; engine errors.
    pub fn new(cfg: &Config, limits: Limits) -> Result<Self> {
        let store = open_archive(cfg)?;
        let table = Arc::new(Measurements::new(cfg.clone(), Some(store.clone())));
        Self::build(cfg, limits, store, table)
    }

    /// The engine whose `measurements` table reads the newest revision of dataset lock
    /// `lock` and nothing else ([`crate::locked`]).
    ///
    /// # Errors
    /// [`Error::Lock`] naming the lock when it does not exist or its manifest cannot be read;
    /// as [`Engine::new`].
    pub async fn locked(cfg: &Config, limits: Limits, lock: &str) -> Result<Self> {
        let store = open_archive(cfg)?;
        let table = Arc::new(LockedMeasurements::open(cfg, store.clone(), lock).await?);
        Self::build(cfg, limits, store, table)
    }

    /// The engine with `measurements` as given and the trial tables of `cfg`'s map shard
    /// ([`crate::trial_tables`]), over the archive's `store`.
    fn build(
        cfg: &Config,
        limits: Limits,
        store: Arc<dyn ObjectStore>,
        measurements: Arc<dyn TableProvider>,
    ) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory_bytes)))
            .with_object_store_registry(Arc::new(sandbox::ArchiveOnly::new(Some(store))?))
            .build_arc()?;
        let mut config = SessionConfig::new()
            .with_target_partitions(limits.partitions.max(1))
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(sandbox::CATALOG, sandbox::SCHEMA);
        // Each sort holds this much back for merging its spill files. DataFusion's default
        // (10 MiB) assumes a large pool; with a small one, four partitions' sorts would take
        // it all before spilling once. A sixteenth of the pool, at most the default.
        let opts = config.options_mut();
        opts.execution.sort_spill_reservation_bytes =
            (limits.memory_bytes / 16).min(opts.execution.sort_spill_reservation_bytes);
        let mut tables = crate::trial_tables::tables(cfg);
        tables.push(("measurements".to_string(), measurements));
        let catalogs = sandbox::ReadOnlyCatalogList::new(tables);
        let table_functions = SessionStateDefaults::default_table_functions()
            .into_iter()
            .filter(|f| sandbox::TABLE_FUNCTIONS.contains(&f.name()))
            .map(|f| (f.name().to_string(), f))
            .collect();
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        if limits.aggregate_pushdown {
            // First, on the planner's plan: the rule follows the partial aggregate's input
            // down to the shards' scans; the rules after it place repartitions and sorts.
            rules.insert(0, Arc::new(crate::aggregate::AggregatePushdown));
        }
        rules.push(Arc::new(yielding::YieldingJoins));
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_catalog_list(Arc::new(catalogs))
            .with_table_factories(HashMap::new())
            .with_table_functions(table_functions)
            .with_physical_optimizer_rules(rules)
            .build();
        for f in functions::all() {
            datafusion::execution::FunctionRegistry::register_udf(&mut state, f)?;
        }
        Ok(Self { state, limits })
    }

    /// The limits it was built with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A session of its own for one request (catalog calls of Flight SQL), on the shared
    /// memory pool and the read-only catalog.
    pub fn context(&self) -> SessionContext {
        SessionContext::new_with_state(self.state.clone())
    }

    /// Plans one read statement.
    ///
    /// # Errors
    /// [`Error::Refused`] naming the statement's kind when it is not a read (see
    /// [`policy`]); the engine's error for invalid SQL, more than one statement or an
    /// unknown column.
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        let dialect = self.state.config().options().sql_parser.dialect;
        let stmt = self
            .state
            .sql_to_statement(sql, &dialect)
            .map_err(unwrap_external)?;
        policy::check(&stmt).map_err(Error::Refused)?;
        let plan = self
            .state
            .statement_to_plan(stmt)
            .await
            .map_err(unwrap_external)?;
        policy::read_only()
            .verify_plan(&plan)
            .map_err(|e| Error::Refused(e.strip_backtrace()))?;
        self.context()
            .execute_logical_plan(plan)
            .await
            .map_err(unwrap_external)
    }

    /// Runs `sql` and collects the result, within the statement timeout (for the CLI, the
    /// benchmarks and tests; the Flight SQL server streams instead).
    ///
    /// # Errors
    /// As [`Engine::plan`]; [`Error::Timeout`] past the statement timeout; [`Error::Shard`]
    /// naming a shard that does not answer.
    pub async fn collect(&self, sql: &str) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let limit = self.limits.statement_timeout;
        let run = async {
            let df = self.plan(sql).await?;
            df.collect().await.map_err(unwrap_external)
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| Error::Timeout(limit))?
    }
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
                Some(Error::Lock { name, message }) => Error::Lock {
                    name: name.clone(),
                    message: message.clone(),
                },
                _ => Error::Engine(e),
            }
        }
        _ => Error::Engine(e),
    }
}
