//! The query engine and server (DataFusion, Arrow Flight SQL): SQL over shards and archive, the server's guards, trial tables.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod query_engine;
mod query_pushdown;
mod query_server_guard;
mod query_trial_tables;
