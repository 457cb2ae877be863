-- vitalsink schema version 1: the measurements hypertable.
-- One row per reading. The time dimension is `ts`; the chunk interval set here is the
-- initial one and is replaced at start-up by `database.chunk_interval` through
-- set_chunk_time_interval (TimescaleDB: it applies to chunks created afterwards).
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS measurements (
    participant_id text             NOT NULL,
    metric         text             NOT NULL,
    ts             timestamptz      NOT NULL,
    value          double precision NOT NULL,
    unit           text,
    device_id      text,
    study_id       text
);

SELECT create_hypertable('measurements', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE);

-- Per-participant time-range reads (the common analyst and restore query).
CREATE INDEX IF NOT EXISTS measurements_participant_ts ON measurements (participant_id, ts DESC);
