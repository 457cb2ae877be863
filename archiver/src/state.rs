//! What the archiver knows about each chunk and object: the state machine of one chunk
//! ([`attempt`]), the shards' `archive_log` ([`log`]) and its mirror in the archive
//! ([`manifest`]).

pub mod attempt;
pub mod log;
pub mod manifest;
