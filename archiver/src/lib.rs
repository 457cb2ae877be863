//! vitalsink's archiver: moves aged hypertable chunks from every shard to verified Parquet
//! files on a NAS path or S3-compatible storage, and restores them.
//!
//! Follow one chunk: [`commands::run`] (`Runner::run_once`: shards, advisory lock) →
//! [`export::catalog::aged_chunks`] (which chunks) → [`export::dedup::drop_archived`] (a late
//! chunk's readings the archive already holds) → [`state::attempt::ChunkJob::archive`]
//! (the state machine: resume, [`export::export`], [`storage::readback`] verification, drop)
//! with every step in [`state::log`] and mirrored to the [`state::manifest`]. Object names:
//! [`storage::layout`]; file format (two versions: before and with the provenance columns):
//! [`export::format`] and [`export::checksum`]. The way
//! back: [`commands::restore`]. Checking the archive: [`commands::verify`]. Renaming an
//! archive's objects to the current layout: [`commands::migrate_archive`].
//!
//! Folders by stage: [`export`] (chunk → Parquet object), [`state`] (log, manifest, the
//! chunk's state machine), [`storage`] (object store, names, read-back), [`commands`] (one
//! module per subcommand); [`cli`], [`error`], [`metrics`], [`progress`] and [`fault`] serve
//! them all. [`trail`] keeps copies of the audit trail in the archive.

pub mod cli;
pub mod commands;
pub mod error;
pub mod export;
pub mod fault;
pub mod metrics;
pub mod progress;
pub mod runner;
pub mod state;
pub mod storage;
pub mod trail;

pub use error::{Error, Result};

/// Where `/metrics`, `/healthz` and `/readyz` are served when `observability.listen` is unset:
/// next to the ingest worker's 9464, so that both run on one host.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";
