-- vitalsink schema version 8: online shard moves (reshard while producers and ingest workers
-- run). Used on the map shard only.
--
-- An online move writes its target epoch into `shard_map` when it starts (the pending epoch),
-- then publishes a cut-over control record into every partition of the measurements topic.
-- A record of a partition routes by the move's target epoch iff its offset is above that
-- partition's cut-over offset; below, by the epoch the move started from. The worker that
-- first consumes a cut-over record inserts its offset here before it handles any later record
-- of that partition, and every later consumer reads the row back (insert-or-get): a replay
-- after a crash routes every record exactly as the first attempt did (ROUTING.md).
ALTER TABLE shard_moves ADD COLUMN IF NOT EXISTS online boolean NOT NULL DEFAULT false;
-- For an online addition: how workers reach the new shard before their configuration lists
-- it (a libpq connection string, as given to `reshard add-shard --url`).
ALTER TABLE shard_moves ADD COLUMN IF NOT EXISTS target_url text;
ALTER TABLE shard_moves DROP CONSTRAINT IF EXISTS shard_moves_phase_check;
ALTER TABLE shard_moves ADD CONSTRAINT shard_moves_phase_check
    CHECK (phase IN ('cutover', 'copying', 'verified', 'switched', 'done'));

CREATE TABLE IF NOT EXISTS shard_cutovers (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    -- The epoch records above `cutover_offset` route by.
    epoch           integer     NOT NULL,
    -- Offset of the first cut-over control record of this epoch in the partition.
    cutover_offset  bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, epoch)
);
