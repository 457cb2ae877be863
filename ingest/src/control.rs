//! The control plane: what the data path ([`crate::data`]) feeds and how it routes, changed
//! while the worker runs.
//!
//! [`rebalance`] is the consumer's rebalance callback: on assignment it reads the shard map
//! and positions each partition where the shards resume it. [`follow`] follows the shard map
//! during an online shard move (the map watch, cut-over records) through [`follow::Control`].
//! [`fleet`] starts and retires the shard writers, one per shard of the routing's union list.
//! [`retention`] refuses an assignment whose resume offsets Kafka no longer holds.
//! [`statuses`] follows the participants' withdrawals and erasures (`participant_status`) and
//! rewinds the consumer when a writer found a batch decided by an older table.
//! The consume loop ([`crate::worker`]) hands their changes ([`rebalance::Assignment`]) to the
//! data path.

pub mod fleet;
pub mod follow;
pub mod rebalance;
pub mod retention;
pub mod statuses;
