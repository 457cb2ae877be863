-- vitalsink schema version 12: provenance. Each reading keeps the UTC offset the device wrote,
-- its occurrence within its record, when the pipeline received it and which Kafka record it
-- came from; a unique index stores each reading once (schemas/README.md, "A reading's
-- identity, time and source").
--
-- The columns are added without defaults, so existing chunks are not rewritten (PostgreSQL
-- docs, ALTER TABLE: "adding a column with no default ... does not require a table rewrite")
-- and rows written before this version read NULL: not recorded. TimescaleDB propagates ADD
-- COLUMN and CREATE INDEX on a hypertable to every chunk.
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS utc_offset_min   smallint;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS occurrence       smallint;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS received_at      timestamptz;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS received_at_type smallint;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS src_topic        text;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS src_partition    integer;
ALTER TABLE measurements ADD COLUMN IF NOT EXISTS src_offset       bigint;

COMMENT ON COLUMN measurements.utc_offset_min IS
    'UTC offset the device wrote with ts, minutes east of UTC; NULL: unknown (-00:00, or written before schema version 12)';
COMMENT ON COLUMN measurements.occurrence IS
    'n-th reading of its record with this ts and value, from 0; part of the reading''s identity; NULL: written before schema version 12';
COMMENT ON COLUMN measurements.received_at IS
    'timestamp of the Kafka record the reading came in (see received_at_type)';
COMMENT ON COLUMN measurements.received_at_type IS
    'kind of received_at, KIP-32: 0 CreateTime (producer clock), 1 LogAppendTime (broker clock)';
COMMENT ON COLUMN measurements.src_topic IS 'lineage: topic of the source Kafka record';
COMMENT ON COLUMN measurements.src_partition IS 'lineage: partition of the source Kafka record';
COMMENT ON COLUMN measurements.src_offset IS 'lineage: offset of the source Kafka record';

-- One row per reading. Leads with (participant_id, ts), so it also serves the per-participant
-- time-range reads that measurements_participant_ts served; a unique index on a hypertable
-- must include the time column (TimescaleDB docs, "Hypertables and unique indexes"). NULL
-- occurrences (rows from before this version) are distinct and never conflict.
CREATE UNIQUE INDEX IF NOT EXISTS measurements_reading
    ON measurements (participant_id, ts, metric, (coalesce(device_id, '')), value, occurrence);
DROP INDEX IF EXISTS measurements_participant_ts;
