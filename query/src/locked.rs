//! `--lock NAME` (`QUERY_LOCK`): the `measurements` table of a dataset lock
//! (`vitalsink_common::datalock`) instead of the live shards and archive.
//!
//! At start-up ([`LockedMeasurements::open`]) the newest revision of lock NAME is read from
//! `dataset_locks` on the map shard (the first configured shard; its stored checksum is
//! checked); a lock that does not exist or whose manifest is unreadable stops `query sql` and
//! `query serve` before anything else, with an error naming the lock ([`Error::Lock`]).
//!
//! Every scan reads the newest revision again (one `SELECT` on the map shard), so a running
//! `query serve` follows a revision written by an erasure at its next statement (the erasure
//! deletes the objects of the older revision that held the participant), and reads exactly
//! that manifest's objects from the configured archive (paths
//! relative to its root: the archive's own `measurements/…` objects and the lock's
//! `locks/<name>/…` exports of hot rows) with [`crate::archive_scan`]: no shard is read, no
//! restored window is left out (the lock's objects are its data), and each object's
//! `range_start`/`range_end` is the range its `ts` bounds prune by. New readings, late data,
//! restores, archiving and shard moves after the lock do not change the answer; a revision
//! after an erasure does. An object missing from the archive fails the scan naming the lock,
//! its revision and the object. The trial tables ([`crate::trial_tables`]) still
//! show the map shard's current state.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use std::sync::{Arc, Mutex};
use vitalsink_common::datalock::{self, Manifest};
use vitalsink_common::db::Shard;
use vitalsink_common::Config;

use crate::error::{Error, Result};
use crate::snapshot::Archived;

/// One revision of the lock, as a scan reads it.
#[derive(Debug, Clone)]
pub struct Revision {
    /// From 1.
    pub revision: i32,
    /// Rows over every object, as the manifest says.
    pub rows: i64,
    /// The objects, with their chunk ranges `[range_start, range_end)`.
    pub objects: Vec<Archived>,
}

impl From<&Manifest> for Revision {
    fn from(m: &Manifest) -> Self {
        Self {
            revision: m.revision,
            rows: m.rows,
            objects: m
                .objects
                .iter()
                .map(|o| Archived {
                    path: o.path.clone(),
                    range: (o.range_start, o.range_end),
                    // Asked of the store at each scan: a locked object gone from the archive
                    // fails the plan, naming the lock and the object.
                    bytes: None,
                })
                .collect(),
        }
    }
}

/// The `measurements` table of a dataset lock: the objects of its newest revision.
#[derive(Debug)]
pub struct LockedMeasurements {
    name: String,
    map: Shard,
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    /// The revision the last scan read.
    last: Mutex<Arc<Revision>>,
}

impl LockedMeasurements {
    /// The table of lock `name` over the archive in `store`, its manifests read from `cfg`'s
    /// map shard; reads the newest revision once.
    ///
    /// # Errors
    /// [`Error::Lock`] naming the lock when it does not exist, its manifest does not match
    /// its checksum or does not parse, or the map shard cannot be read (the driver's message).
    pub async fn open(cfg: &Config, store: Arc<dyn ObjectStore>, name: &str) -> Result<Self> {
        let Some(map) = cfg.shards.first() else {
            return Err(Error::Lock {
                name: name.to_string(),
                message: "no shards configured: locks are read from the map shard".into(),
            });
        };
        let map = Shard::new(0, map, &cfg.database)?;
        let first = newest(&map, name).await?;
        tracing::info!(
            lock = %name,
            revision = first.revision,
            objects = first.objects.len(),
            rows = first.rows,
            "measurements reads the dataset lock only"
        );
        Ok(Self {
            name: name.to_string(),
            map,
            schema: crate::table::schema(),
            store,
            last: Mutex::new(Arc::new(first)),
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The revision the last scan read (at first, the one read at start).
    pub fn last(&self) -> Arc<Revision> {
        match self.last.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the newest revision and remembers it.
    ///
    /// # Errors
    /// As [`LockedMeasurements::open`].
    pub async fn refresh(&self) -> Result<Arc<Revision>> {
        let rev = Arc::new(newest(&self.map, &self.name).await?);
        let before = self.last().revision;
        if rev.revision != before {
            tracing::info!(
                lock = %self.name,
                revision = rev.revision,
                was = before,
                objects = rev.objects.len(),
                rows = rev.rows,
                "the dataset lock has a new revision; reading it"
            );
        }
        match self.last.lock() {
            Ok(mut g) => *g = rev.clone(),
            Err(p) => *p.into_inner() = rev.clone(),
        }
        Ok(rev)
    }
}

/// The newest revision of lock `name` on `map`.
async fn newest(map: &Shard, name: &str) -> Result<Revision> {
    let lock_err = |message: String| Error::Lock {
        name: name.to_string(),
        message,
    };
    let m = datalock::load(map, name, None)
        .await
        .map_err(|e| lock_err(e.to_string()))?
        .ok_or_else(|| {
            lock_err(format!(
                "no such dataset lock in dataset_locks on the map shard {} (`trial lock create` makes one)",
                map.name
            ))
        })?;
    Ok(Revision::from(&m))
}

#[async_trait]
impl TableProvider for LockedMeasurements {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// `Inexact`: filters prune objects (by their ranges) and row groups; the engine applies
    /// them again.
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
        let rev = self.refresh().await?;
        let plan = crate::archive_scan::projected(
            state,
            &self.store,
            &self.schema,
            &projected,
            &rev.objects,
            &[],
            filters,
        )
        .await
        .map_err(|e| match e {
            Error::Archive(m) => Error::Lock {
                name: self.name.clone(),
                message: format!("revision {}: {m}", rev.revision),
            },
            other => other,
        })?;
        Ok(plan.unwrap_or_else(|| Arc::new(EmptyExec::new(projected))))
    }
}
