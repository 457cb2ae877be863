-- vitalsink schema version 7: shard moves (reshard). Every phase is recorded durably, as
-- TimescaleDB's chunk_copy_operation records its stages, so that a killed move resumes.
-- `shard_moves` is used on the map shard only: one row per change of the shard set, from
-- epoch `from_epoch` to `to_epoch`.
CREATE TABLE IF NOT EXISTS shard_moves (
    id           bigserial   PRIMARY KEY,
    from_epoch   integer     NOT NULL,
    to_epoch     integer     NOT NULL UNIQUE,
    kind         text        NOT NULL CHECK (kind IN ('add', 'remove')),
    shard        text        NOT NULL,
    -- For an addition: which database the new shard is (`<system identifier>/<database>`),
    -- so that a resumed run given another --url is refused.
    target_id    text,
    phase        text        NOT NULL CHECK (phase IN ('copying', 'verified', 'switched', 'done')),
    participants integer     NOT NULL DEFAULT 0,
    rows_total   bigint      NOT NULL DEFAULT 0,
    -- Progress for `reshard status`, updated after each participant's copy or delete commits
    -- on its shard (so it may lag one participant behind after a kill).
    rows_copied  bigint      NOT NULL DEFAULT 0,
    rows_deleted bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- On every shard: per move and participant, what this shard took in (`copied`, written in the
-- same transaction as the copied rows) or gave away (`deleted`, in the same transaction as
-- the DELETE), with the rows' count and order-independent checksum. This is what makes each
-- step idempotent on a re-run.
CREATE TABLE IF NOT EXISTS shard_move_rows (
    move_id        bigint  NOT NULL,
    participant_id text    NOT NULL,
    side           text    NOT NULL CHECK (side IN ('copied', 'deleted')),
    rows           bigint  NOT NULL,
    checksum       numeric NOT NULL,
    PRIMARY KEY (move_id, participant_id, side)
);
