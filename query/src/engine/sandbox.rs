//! What a statement can reach: the `measurements` table and the trial tables, the catalog's
//! own `information_schema`, the pure table functions, and the configured archive, nothing
//! else.
//!
//! - **A read-only catalog.** One catalog (`datafusion`) with one schema (`public`) holding
//!   the tables, fixed when the server starts. Its providers keep DataFusion's default answer
//!   to `register_*`/`deregister_*` (an error), so even a statement that got past
//!   [`super::policy`] could not drop, replace or add a table that other clients see.
//!   `information_schema` is DataFusion's view over it.
//! - **Only the archive's object store.** DataFusion's default registry serves `file://` from
//!   the server's whole file system; ours answers for the archive's URL
//!   ([`crate::archive_scan::STORE_URL`]) and refuses every other URL and every new store.
//! - **No table factories** (`CREATE EXTERNAL TABLE`'s CSV, JSON, Parquet, Arrow readers) and
//!   no URL tables (`SELECT * FROM '/etc/passwd'`; DataFusion's `enable_url_table` is never
//!   called).
//! - **Table functions from [`TABLE_FUNCTIONS`] only**: pure generators; DataFusion 55 ships
//!   no file-reading one, and a future one is left out until someone adds it here.

use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// The table functions a statement may call (DataFusion's `generate_series` and `range`:
/// integers or timestamps from arguments, no input).
pub const TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// The catalog's name, as DataFusion's default.
pub const CATALOG: &str = "datafusion";
/// The schema's name, as DataFusion's default.
pub const SCHEMA: &str = "public";

/// One schema of fixed tables.
#[derive(Debug)]
pub struct ReadOnlySchema {
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
}

#[async_trait::async_trait]
impl SchemaProvider for ReadOnlySchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.get(name).cloned())
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

/// One catalog of one [`ReadOnlySchema`].
#[derive(Debug)]
pub struct ReadOnlyCatalog {
    schema: Arc<ReadOnlySchema>,
}

impl CatalogProvider for ReadOnlyCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == SCHEMA).then(|| self.schema.clone() as Arc<dyn SchemaProvider>)
    }
}

/// The list of one [`ReadOnlyCatalog`]. `register_catalog` cannot report an error in
/// DataFusion's trait: it registers nothing and logs a warning.
#[derive(Debug)]
pub struct ReadOnlyCatalogList {
    catalog: Arc<ReadOnlyCatalog>,
}

impl ReadOnlyCatalogList {
    /// `tables` in `datafusion.public`.
    pub fn new(tables: impl IntoIterator<Item = (String, Arc<dyn TableProvider>)>) -> Self {
        Self {
            catalog: Arc::new(ReadOnlyCatalog {
                schema: Arc::new(ReadOnlySchema {
                    tables: tables.into_iter().collect(),
                }),
            }),
        }
    }
}

impl CatalogProviderList for ReadOnlyCatalogList {
    fn register_catalog(
        &self,
        name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        tracing::warn!(catalog = %name, "refused to register a catalog: the catalog is read-only");
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![CATALOG.to_string()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == CATALOG).then(|| self.catalog.clone() as Arc<dyn CatalogProvider>)
    }
}

/// An object-store registry of one store: the archive's, under
/// [`crate::archive_scan::STORE_URL`].
#[derive(Debug)]
pub struct ArchiveOnly {
    key: String,
    store: Option<Arc<dyn ObjectStore>>,
}

/// `scheme://host[:port]`, as DataFusion keys its registry.
fn key_of(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ArchiveOnly {
    /// The registry of `store` (`None`: no archive configured, every URL is refused).
    ///
    /// # Errors
    /// Never in practice: [`crate::archive_scan::STORE_URL`] is a valid URL.
    pub fn new(store: Option<Arc<dyn ObjectStore>>) -> Result<Self> {
        let url = Url::parse(crate::archive_scan::STORE_URL)
            .map_err(|e| DataFusionError::Configuration(e.to_string()))?;
        Ok(Self {
            key: key_of(&url),
            store,
        })
    }
}

impl ObjectStoreRegistry for ArchiveOnly {
    fn register_store(
        &self,
        url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        tracing::warn!(%url, "refused to register an object store: only the archive is read");
        None
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        Err(DataFusionError::Plan(format!(
            "object store {url}: the query server's stores are fixed"
        )))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match &self.store {
            Some(s) if key_of(url) == self.key => Ok(s.clone()),
            _ => Err(DataFusionError::Plan(format!(
                "{url}: the query server reads the configured archive only"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_archive_url_has_a_store() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let r = ArchiveOnly::new(Some(store.clone())).unwrap();
        let archive = Url::parse(crate::archive_scan::STORE_URL).unwrap();
        assert!(r.get_store(&archive).is_ok());
        for other in [
            "file:///etc/passwd",
            "file:///",
            "s3://bucket/x",
            "http://127.0.0.1/",
        ] {
            let url = Url::parse(other).unwrap();
            assert!(r.get_store(&url).is_err(), "{other}");
            assert!(r.register_store(&url, store.clone()).is_none());
            assert!(r.get_store(&url).is_err(), "{other} after register");
        }
        let none = ArchiveOnly::new(None).unwrap();
        assert!(none.get_store(&archive).is_err());
    }

    #[tokio::test]
    async fn the_catalog_cannot_change() {
        let list = ReadOnlyCatalogList::new([(
            "measurements".to_string(),
            Arc::new(datafusion::datasource::empty::EmptyTable::new(
                crate::table::schema(),
            )) as Arc<dyn TableProvider>,
        )]);
        let schema = list.catalog(CATALOG).unwrap().schema(SCHEMA).unwrap();
        let t = schema.table("measurements").await.unwrap().unwrap();
        assert!(schema.register_table("x".into(), t.clone()).is_err());
        assert!(schema.deregister_table("measurements").is_err());
        assert!(schema.table_exist("measurements"));
        assert!(list
            .catalog(CATALOG)
            .unwrap()
            .deregister_schema(SCHEMA, true)
            .is_err());
        assert!(list
            .catalog(CATALOG)
            .unwrap()
            .register_schema("other", schema.clone())
            .is_err());
        list.register_catalog("other".into(), list.catalog(CATALOG).unwrap());
        assert_eq!(list.catalog_names(), vec![CATALOG.to_string()]);
    }
}
