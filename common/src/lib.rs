//! Shared building blocks of vitalsink, the participant-measurement ingestion and archiving
//! pipeline: configuration ([`config`]), the measurement contract ([`measurement`]), shard
//! routing ([`routing`]), and the Kafka ([`kafka`]) and PostgreSQL ([`db`], [`migrate`])
//! helpers both binaries use.
//!
//! Reading order for a newcomer following one measurement: [`measurement::decode`] (the
//! contract), [`routing::ShardRouter`] (which shard), then `vitalsink_ingest`.

pub mod audit;
pub mod cli;
pub mod columns;
pub mod config;
pub mod cutover;
pub mod datalock;
pub mod db;
pub mod error;
pub mod kafka;
pub mod measurement;
pub mod migrate;
pub mod observe;
pub mod participants;
pub mod pgconn;
pub mod retry;
pub mod routing;
pub mod secret;
pub mod shardmap;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};
