-- vitalsink schema version 5: `archiver migrate-archive` renames archived objects.
-- * step 'renamed': an archived object was copied to a new name, the copy read back and
--   matched (size, rows, checksum, ts range), and the old name deleted after this row was
--   mirrored to the manifest. object_path is the new name; the attempt's earlier rows keep
--   the old one, so the trail of every object stays complete.
-- * renamed_from: the object's previous path (set on 'renamed' rows only).
ALTER TABLE archive_log DROP CONSTRAINT IF EXISTS archive_log_step_check;
ALTER TABLE archive_log ADD CONSTRAINT archive_log_step_check
    CHECK (step IN ('planned', 'written', 'verified', 'dropped', 'restored', 'failed', 'discarded',
                    'renamed'));
ALTER TABLE archive_log ADD COLUMN IF NOT EXISTS renamed_from text;
