-- vitalsink schema version 3: the archive log, one row per step the archiver takes on a
-- chunk (planned -> written -> verified -> dropped; restored for the way back; failed with a
-- detail). The newest row of a chunk tells where a crashed run must resume.
CREATE TABLE IF NOT EXISTS archive_log (
    id           bigserial   PRIMARY KEY,
    run_id       text        NOT NULL,
    hypertable   text        NOT NULL,
    chunk_schema text        NOT NULL,
    chunk_name   text        NOT NULL,
    range_start  timestamptz NOT NULL,
    range_end    timestamptz NOT NULL,
    step         text        NOT NULL
        CHECK (step IN ('planned', 'written', 'verified', 'dropped', 'restored', 'failed')),
    object_path  text,
    bytes        bigint,
    rows         bigint,
    checksum     text,
    detail       text,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS archive_log_chunk ON archive_log (chunk_schema, chunk_name, id);
