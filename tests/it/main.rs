//! The end-to-end tests of vitalsink, in one test binary (issue 29: one link instead of one
//! per file). They run the real binaries from `target/debug` against the local stack
//! (`dev/stack up`; endpoints from `eval "$(dev/stack env)"`). One module per area, one
//! module per former `tests/tests/<name>.rs` file under it, named as the file was, so
//! `cargo test --workspace --test it ingest_failover` runs that file's tests and
//! `cargo test --workspace --test it ingest::` runs an area.

mod archiver;
mod ingest;
mod ops;
mod provenance;
mod query;
mod replay;
mod reshard;
mod security;
mod stack;
mod trial;
