//! vitalsink's operator command for the shard set: `reshard`.
//!
//! A shard set changes by one shard at a time, as jump hash allows (`schemas/ROUTING.md`):
//! **append** a shard (about `1/(n+1)` of the participants move to it, from every old shard)
//! or **remove the last** one (its participants move to the others).
//!
//! - `reshard plan …` ([`plan::plan`]): which participants move, from where to where, how
//!   many rows, and whether the request can be honoured at all, without changing anything.
//! - `reshard add-shard` / `remove-shard` ([`moves::run`]): the move itself. Online (the
//!   default) while producers and ingest workers run: the target epoch into the shard map,
//!   a cut-over record into every Kafka partition ([`cutover`]), then, once every shard has
//!   applied every partition past its cut-over, copy, verify and delete the moving
//!   participants' history. Offline (`--offline`) with the workers stopped: copy, verify,
//!   switch, delete. Every phase is durable and resumable after a kill.
//!
//! Follow one move: [`cli`] → [`moves::run`] (checks, [`state`], [`moves::offsets`]) →
//! [`cutover`] (online) → [`moves::verify`]: [`plan::moving`] (who moves) →
//! [`copy::copy_batch`] → verification ([`copy::CHECKSUM_SQL`]) → the switch
//! ([`state::switch`], offline) → [`moves::delete`] → the move's audit entry
//! ([`audit::finish`], with `--reason`, required).

pub mod audit;
pub mod cli;
pub mod copy;
pub mod cutover;
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
