//! vitalsink's operator command for the shard set: `reshard`.
//!
//! A shard set changes by one shard at a time, as jump hash allows (`schemas/ROUTING.md`):
//! **append** a shard (about `1/(n+1)` of the participants move to it, from every old shard)
//! or **remove the last** one (its participants move to the others).
//!
//! - `reshard plan …` ([`plan::plan`]): which participants move, from where to where, how
//!   many rows, and whether the request can be honoured at all, without changing anything.
//! - `reshard add-shard` / `remove-shard` ([`moves::run`]): the move itself, with the ingest
//!   workers and the archiver stopped — copy, verify, switch the shard map to the next
//!   epoch, delete the moved rows from their old shards — every phase durable and resumable
//!   after a kill. Moving online, while ingest keeps writing (a cut-over point per Kafka
//!   partition), is issue 12's open work.
//!
//! Follow one move: [`cli`] → [`moves::run`] (checks, [`state`]) → [`plan::moving`] (who
//! moves) → [`copy::copy_participant`] → verification ([`copy::checksum`]) → the switch
//! ([`state::switch`]) → the deletes.

pub mod cli;
pub mod copy;
pub mod error;
pub mod fault;
pub mod metrics;
pub mod moves;
pub mod plan;
pub mod progress;
pub mod state;

pub use error::{Error, Result};

/// Where `/metrics`, `/healthz` and `/readyz` are served while a move runs, when
/// `observability.listen` is unset (ingest 9464, archiver 9465).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9466";
