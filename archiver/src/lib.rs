//! vitalsink's archiver: moves aged hypertable chunks from every shard to verified Parquet
//! files on a NAS path or S3-compatible storage, and restores them.
//!
//! Follow one chunk: [`run::Runner::run_once`] (shards, advisory lock) →
//! [`catalog::aged_chunks`] (which chunks) → [`attempt::ChunkJob::archive`] (the state
//! machine: resume, [`export::export`], [`readback`] verification, drop) with every step
//! in [`log`] and mirrored to the [`manifest`]. Object names: [`layout`]; file format:
//! [`format`] and [`checksum`]. The way back: [`restore`]. Checking the archive: [`audit`].
//! Renaming an archive's objects to the current layout: [`migrate_archive`].

pub mod attempt;
pub mod audit;
pub mod catalog;
pub mod checksum;
pub mod cli;
pub mod error;
pub mod export;
pub mod fault;
pub mod format;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod merge;
pub mod metrics;
pub mod migrate_archive;
pub mod objreader;
pub mod pgcopy;
pub mod progress;
pub mod ratelimit;
pub mod readback;
pub mod readers;
pub mod restore;
pub mod run;
pub mod runfile;
pub mod sort;
pub mod status;
pub mod store;

pub use error::{Error, Result};
