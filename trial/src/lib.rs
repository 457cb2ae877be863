//! Trial operations of vitalsink (README "Running a trial"): the audit trail (`audit list`,
//! `audit verify`), participants' withdrawal, reinstatement and erasure (`participants …`) and
//! dataset locks (`lock …`).
//!
//! Reading order: [`cli`] (the verbs), then one file per verb under [`commands`]. The audit
//! trail's format and chain live in `vitalsink_common::audit`, the withdrawal rule in
//! `vitalsink_common::participants`: every binary appends to the one and ingest decides by the
//! other.

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;

pub use error::{Error, Result};
