//! The `measurements` table: every shard's hypertable plus the Parquet archive, each row
//! once ([`crate::snapshot`]), as one DataFusion `TableProvider`.
//!
//! Reading order for one query: DataFusion plans the SQL and calls [`Measurements`]'s `scan`
//! with the projection and filters → [`crate::pushdown`] (which shards, which archive
//! objects, what SQL) → [`crate::snapshot::open`] (one snapshot per shard, archive and move
//! state read in it) → [`crate::shard_scan::ShardScanExec`] per shard and
//! [`crate::archive_scan::plan`] → a union the engine aggregates, joins and sorts over.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use std::sync::Arc;
use vitalsink_common::Config;

use crate::pushdown::{participants, to_sql};
use crate::shard_scan::{select_expr, ShardScanExec};

/// The table's schema: the archive's Parquet schema, which the shards' rows are read into.
pub fn schema() -> SchemaRef {
    vitalsink_archiver::export::format::schema()
}

/// The `measurements` table of one deployment.
#[derive(Debug)]
pub struct Measurements {
    cfg: Config,
    schema: SchemaRef,
    /// The archive's store (`None` when no archive is configured: the shards alone).
    store: Option<Arc<dyn ObjectStore>>,
    /// Connections to the shards, reused by the table's queries.
    pools: Arc<crate::sessions::Pools>,
}

impl Measurements {
    /// The table over `cfg`'s shards and, when given, the archive in `store`.
    pub fn new(cfg: Config, store: Option<Arc<dyn ObjectStore>>) -> Self {
        Self {
            cfg,
            schema: schema(),
            store,
            pools: Arc::default(),
        }
    }
}

fn quote_list(ids: &[String]) -> String {
    ids.iter()
        .map(|p| format!("'{}'", p.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl datafusion::catalog::TableProvider for Measurements {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is `Inexact`: pushed down where it can be (SQL to the shards, pruning of
    /// archive objects and row groups), and applied again by the engine.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projected: SchemaRef = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let who = participants(filters);
        let snap = crate::snapshot::open(&self.cfg, &self.pools, who.as_ref()).await?;
        let terms: Vec<String> = filters.iter().filter_map(to_sql).collect();
        if let Some(ps) = &who {
            if ps.is_empty() {
                return Ok(Arc::new(EmptyExec::new(projected)));
            }
        }
        let select = if projected.fields().is_empty() {
            "1".to_string()
        } else {
            projected
                .fields()
                .iter()
                .map(|f| select_expr(f))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for s in snap.shards {
            let mut where_ = terms.clone();
            if !s.exclude.is_empty() {
                where_.push(format!(
                    "participant_id NOT IN ({})",
                    quote_list(&s.exclude)
                ));
            }
            parts.push(Arc::new(ShardScanExec::new(
                format!("{} ({})", s.name, s.on),
                select.clone(),
                where_,
                projected.clone(),
                s.client,
            )));
        }
        if let Some(store) = &self.store {
            if let Some(a) = crate::archive_scan::projected(
                state,
                store,
                &self.schema,
                &projected,
                &snap.archived,
                &snap.restored,
                filters,
            )
            .await?
            {
                parts.push(a);
            }
        }
        Ok(match parts.len() {
            0 => Arc::new(EmptyExec::new(projected)),
            1 => parts.remove(0),
            _ => UnionExec::try_new(parts)?,
        })
    }
}
