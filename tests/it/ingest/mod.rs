//! The ingest worker: exactly-once delivery, consumer groups, dead letters, shard map, shard outages and broker fail-over, memory bound.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod ingest_consumer_group;
mod ingest_dead_letter_faults;
mod ingest_exactly_once;
mod ingest_failover;
mod ingest_memory;
mod ingest_shard_map;
mod ingest_shard_outage;
