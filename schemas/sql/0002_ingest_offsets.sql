-- vitalsink schema version 2: per-shard ingest offsets, the exactly-once bookkeeping.
-- For each (consumer group, topic, partition) the Kafka offset of the next record this shard
-- has not yet applied. The ingest worker locks this row and updates it in the same
-- transaction as the rows it COPYs, so rows and offset commit or roll back together.
CREATE TABLE IF NOT EXISTS ingest_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    rows_applied    bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
