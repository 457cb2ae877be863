//! One module per subcommand that works on shards and archive: `run` ([`run`]), `plan`
//! ([`plan`]), `verify` ([`verify`]), `restore` ([`restore`]), `status` ([`status`]) and
//! `migrate-archive` ([`migrate_archive`]), each on the working set of
//! [`crate::runner::Runner`]. The flags are in [`crate::cli`].

pub mod migrate_archive;
pub mod plan;
pub mod restore;
pub mod run;
pub mod status;
pub mod verify;
