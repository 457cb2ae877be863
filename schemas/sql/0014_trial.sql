-- vitalsink schema version 14: trial operations (README "Running a trial"; schemas/ROLES.md).
--
-- * audit_log: one entry per operator action that creates, changes, moves or deletes records
--   (21 CFR 11.10(e); FDA Q&A guidance on electronic systems in clinical investigations, 2024,
--   Q12; EMA/INS/GCP/112288/2023 §6.2.1). The copy on the map shard is the trail; on other
--   shards the table stays empty. Entries are chained: `hash` is SHA-256 over the entry's
--   canonical encoding (common/src/audit.rs) including `prev_hash`, the hash of the entry
--   before it, so `trial audit verify` finds an entry changed, removed or reordered even by
--   the table's owner. Triggers refuse UPDATE, DELETE and TRUNCATE for every role; no
--   vitalsink role is granted them either.
-- * participant_status: withdrawals, reinstatements and erasures, on every shard (ingest
--   decides each reading against the copy on the shard it writes to, in the transaction that
--   writes it; common/src/participants.rs).
-- * dataset_locks, dataset_lock_objects: named, immutable dataset versions (ICH E6(R3)
--   3.16.1(r)), on the map shard.
-- * Two new group roles: vitalsink_steward (the data manager: withdraw, reinstate, erase,
--   lock) and vitalsink_auditor (reads the trail and the locks).

CREATE TABLE IF NOT EXISTS audit_log (
    seq          bigint      PRIMARY KEY CHECK (seq >= 1),
    at           timestamptz NOT NULL,
    os_user      text        NOT NULL,
    db_role      text        NOT NULL,
    host         text        NOT NULL,
    action       text        NOT NULL,
    command      text        NOT NULL,
    reason       text,
    participants text[]      NOT NULL DEFAULT '{}',
    details      text        NOT NULL CHECK (details::jsonb IS NOT NULL),
    prev_hash    text        NOT NULL,
    hash         text        NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_participants ON audit_log USING gin (participants);
COMMENT ON TABLE audit_log IS
    'vitalsink audit trail: append-only, hash-chained (schemas/sql/0014_trial.sql)';

CREATE OR REPLACE FUNCTION vitalsink_audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION vitalsink_audit_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION vitalsink_audit_append_only();

-- Status changes of participants. The status of a reading's participant at the reading's own
-- time `ts` is the one of the change with the latest effective_at <= ts (ties: the later seq);
-- none: active. 'erased' takes effect at -infinity and ends only with a reinstatement.
CREATE TABLE IF NOT EXISTS participant_status (
    seq            bigint      PRIMARY KEY CHECK (seq >= 1),
    participant_id text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('active', 'withdrawn', 'erased')),
    effective_at   timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    reason         text        NOT NULL,
    audit_seq      bigint
);
CREATE INDEX IF NOT EXISTS participant_status_participant ON participant_status (participant_id);

CREATE TABLE IF NOT EXISTS dataset_locks (
    name       text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    revision   integer     NOT NULL CHECK (revision >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    reason     text        NOT NULL,
    rows       bigint      NOT NULL,
    manifest   text        NOT NULL CHECK (manifest::jsonb IS NOT NULL),
    checksum   text        NOT NULL,
    audit_seq  bigint,
    PRIMARY KEY (name, revision)
);

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['vitalsink_steward', 'vitalsink_auditor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by the migration of another database
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO vitalsink_steward, vitalsink_auditor',
                   current_schema());
END
$roles$;

GRANT SELECT ON vitalsink_schema_version TO vitalsink_steward, vitalsink_auditor;

-- The trail: every role that acts appends; the auditor and query read. Nobody updates.
GRANT SELECT, INSERT ON audit_log
    TO vitalsink_archiver, vitalsink_mover, vitalsink_steward;
GRANT SELECT ON audit_log TO vitalsink_reader, vitalsink_auditor;

-- Status: the steward records it; ingest decides by it; query shows it; the mover copies it to
-- a new shard.
GRANT SELECT, INSERT ON participant_status TO vitalsink_steward, vitalsink_mover;
GRANT SELECT ON participant_status TO vitalsink_ingest, vitalsink_reader, vitalsink_archiver,
    vitalsink_auditor;

-- Locks: the steward creates and revises them; the archiver keeps their objects; query and the
-- auditor read them.
GRANT SELECT, INSERT ON dataset_locks TO vitalsink_steward;
GRANT SELECT ON dataset_locks TO vitalsink_archiver, vitalsink_reader, vitalsink_auditor;

-- The steward reads what a lock or an erasure needs, and the shard map.
GRANT SELECT ON measurements, archive_log, shard_map, shard_moves TO vitalsink_steward;

-- Erasure (GDPR Art. 17): `trial participants erase` removes a participant's rows from every
-- shard through this function (the steward gets no DELETE on measurements), rewrites the
-- archive's objects without them, and keeps its progress in `erasures` on the map shard so
-- that a killed run resumes where it stopped.
DO $function$
DECLARE
    body text := $body$
        CREATE OR REPLACE FUNCTION @SCHEMA@.vitalsink_erase_participant(participant text)
        RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        DECLARE
            n bigint;
        BEGIN
            IF participant IS NULL OR participant = '' THEN
                RAISE EXCEPTION 'vitalsink_erase_participant: no participant'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            DELETE FROM @SCHEMA@.measurements WHERE participant_id = participant;
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END
        $fn$
    $body$;
BEGIN
    EXECUTE replace(body, '@SCHEMA@', quote_ident(current_schema()));
    EXECUTE format('REVOKE ALL ON FUNCTION %I.vitalsink_erase_participant(text) FROM PUBLIC',
                   current_schema());
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.vitalsink_erase_participant(text) TO vitalsink_steward',
                   current_schema());
END
$function$;

CREATE TABLE IF NOT EXISTS erasures (
    id             bigserial   PRIMARY KEY,
    participant_id text        NOT NULL,
    reason         text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    state          text        NOT NULL DEFAULT '{}' CHECK (state::jsonb IS NOT NULL),
    audit_seq      bigint
);
CREATE UNIQUE INDEX IF NOT EXISTS erasures_running ON erasures (participant_id)
    WHERE finished_at IS NULL;
GRANT SELECT, INSERT, UPDATE ON erasures TO vitalsink_steward;
GRANT USAGE ON SEQUENCE erasures_id_seq TO vitalsink_steward;
GRANT SELECT ON erasures TO vitalsink_auditor, vitalsink_reader;

-- The erasure swaps an archive object for its rewrite as `migrate-archive` renames one: a
-- `renamed` row in the object's shard's archive_log, mirrored to the manifest.
GRANT SELECT, INSERT, UPDATE ON archive_log TO vitalsink_steward;
GRANT USAGE ON SEQUENCE archive_log_id_seq TO vitalsink_steward;
