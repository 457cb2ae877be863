-- vitalsink schema version 6: the shard map, the durable and versioned source of truth of
-- which shards route (ROUTING.md). The copy on the map shard — the first shard of the
-- routing order, which jump hash never removes — is the one every worker, the archiver and
-- any reader consult; on other shards the table stays empty.
-- One row per epoch; the highest epoch is the current one. Routing is a pure function of
-- (participant_id, epoch): jump_consistent_hash(fnv1a_64(participant_id), cardinality(shards)).
CREATE TABLE IF NOT EXISTS shard_map (
    epoch      integer     PRIMARY KEY CHECK (epoch >= 1),
    shards     text[]      NOT NULL CHECK (cardinality(shards) >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    reason     text        NOT NULL
);
