-- vitalsink schema version 4: what the archiver needs beyond version 3's archive_log.
-- * step 'discarded': an object of an attempt that was not adopted (crashed upload,
--   failed verification, chunk changed before the drop) was deleted from the archive.
-- * attempt: the attempt id that names the object (one per chunk and try).
-- * min_ts / max_ts: smallest and largest `ts` of the rows written (checked on read-back).
-- * in_manifest: the row is mirrored as an object in the archive's manifest/ (object stores
--   have no append, so rows are mirrored one object each, after they commit here).
ALTER TABLE archive_log DROP CONSTRAINT IF EXISTS archive_log_step_check;
ALTER TABLE archive_log ADD CONSTRAINT archive_log_step_check
    CHECK (step IN ('planned', 'written', 'verified', 'dropped', 'restored', 'failed', 'discarded'));
ALTER TABLE archive_log
    ADD COLUMN IF NOT EXISTS attempt     text,
    ADD COLUMN IF NOT EXISTS min_ts      timestamptz,
    ADD COLUMN IF NOT EXISTS max_ts      timestamptz,
    ADD COLUMN IF NOT EXISTS in_manifest boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS archive_log_not_in_manifest ON archive_log (id) WHERE NOT in_manifest;
