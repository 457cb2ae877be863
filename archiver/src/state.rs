//! What the archiver knows about each chunk and object: the state machine of one chunk
//! ([`attempt`]) and the chunk lock it holds from export to drop ([`guard`]), the shards'
//! `archive_log` ([`log`]) and its mirror in the archive ([`manifest`]); the audit entries of
//! the drops ([`audit`]); the drop's COMMIT, over once other sessions see it ([`commit`]).

pub mod attempt;
pub mod audit;
pub mod commit;
pub mod guard;
pub mod log;
pub mod manifest;
