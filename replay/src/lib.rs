//! `vitalsink-replay`: the reference producer of vitalsink.
//!
//! - [`formats`] parses real participant recordings shipped in PyPI packages (pyActigraphy's
//!   Actiwatch `.AWD` files and biobankAccelerometerAnalysis time series, heartpy's PPG
//!   recordings), fetched into a cache by `dev/fetch-data`; each file is one participant.
//! - [`rebase`] places them in time (default: each recording ends now), [`mapping`] names
//!   their metrics and units in the contract's terms.
//! - [`publish`] sends them to Kafka the way every producer should (idempotent, `acks=all`,
//!   batch form, keyed by participant, paced by [`governor`]), with [`progress`].
//! - [`synthetic`] generates load modelled on the recordings for scale tests.
//! - [`truth`] computes what the database and archive must hold afterwards: per participant
//!   counts and exact sums, and daily means per participant and metric.
//!
//! Reading order: [`formats::awd`], [`publish`], [`run::real`].

pub mod cli;
pub mod error;
pub mod exact;
pub mod formats;
pub mod mapping;
pub mod progress;
pub mod publish;
pub mod rebase;
pub mod recording;
pub mod run;
pub mod synthetic;
pub mod truth;

pub use error::{Error, Result};
