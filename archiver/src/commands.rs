//! One module per subcommand that works on shards and archive: `run` and `plan` ([`run`],
//! whose [`run::Runner`] every command uses), `verify` ([`verify`]), `restore` ([`restore`]),
//! `status` ([`status`]) and `migrate-archive` ([`migrate_archive`]). The flags are in
//! [`crate::cli`].

pub mod migrate_archive;
pub mod restore;
pub mod run;
pub mod status;
pub mod verify;
