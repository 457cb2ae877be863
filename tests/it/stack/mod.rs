//! The local stack itself: Kafka, TimescaleDB, S3, PgBouncer, HA fail-over, backups, the secure variant.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod stack_backup;
mod stack_ha_failover;
mod stack_kafka;
mod stack_object_store;
mod stack_pgbouncer;
mod stack_secure;
mod stack_timescale;
