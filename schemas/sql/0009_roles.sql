-- vitalsink schema version 9: least-privilege roles (schemas/ROLES.md).
--
-- Four NOLOGIN group roles, one per kind of binary; operators create login users IN ROLE
-- them. Roles are cluster-wide while this migration runs once per database, possibly in many
-- databases of one cluster at the same time: each role is created only when missing, and a
-- concurrent creator winning the race (duplicate_object, or unique_violation on pg_authid's
-- index when both inserts overlap) is not an error. A migrating owner without CREATEROLE can
-- have a DBA create the four roles beforehand; the creation is then skipped.
--
-- Grants are per database and name every table explicitly: a later migration that creates a
-- table grants it in the same file (no ALTER DEFAULT PRIVILEGES, which would hand every future
-- table to every role). TimescaleDB chunks copy the hypertable's ACL when they are created, and
-- a GRANT on the hypertable is propagated to its existing chunks, so the grants on
-- `measurements` cover every chunk, present and future.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['vitalsink_ingest', 'vitalsink_archiver', 'vitalsink_reader',
                             'vitalsink_mover']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by the migration of another database
            END;
        END IF;
    END LOOP;
END
$roles$;

-- The schema the tables live in (where the migrations ran).
DO $schema$
BEGIN
    EXECUTE format(
        'GRANT USAGE ON SCHEMA %I TO vitalsink_ingest, vitalsink_archiver, vitalsink_reader, vitalsink_mover',
        current_schema());
END
$schema$;

-- Everyone reads the schema version (the start-up check of every binary).
GRANT SELECT ON vitalsink_schema_version
    TO vitalsink_ingest, vitalsink_archiver, vitalsink_reader, vitalsink_mover;

-- ingest: COPY rows in (INSERT; a new time range creates its chunk, which TimescaleDB does as
-- the hypertable's owner), keep ingest_offsets (insert missing rows, lock them FOR UPDATE,
-- advance them), read the shard map and moves, record cut-overs, bootstrap epoch 1.
GRANT INSERT ON measurements TO vitalsink_ingest;
GRANT SELECT, INSERT, UPDATE ON ingest_offsets TO vitalsink_ingest;
GRANT SELECT, INSERT ON shard_map TO vitalsink_ingest;
GRANT SELECT ON shard_moves TO vitalsink_ingest;
GRANT SELECT, INSERT ON shard_cutovers TO vitalsink_ingest;

-- archiver: read chunks (export, verify), restore rows (INSERT), keep the archive log, read the
-- shard map and moves; chunks are locked and dropped only through the functions below.
GRANT SELECT, INSERT ON measurements TO vitalsink_archiver;
GRANT SELECT, INSERT, UPDATE ON archive_log TO vitalsink_archiver;
GRANT USAGE ON SEQUENCE archive_log_id_seq TO vitalsink_archiver;
GRANT SELECT ON shard_map, shard_moves TO vitalsink_archiver;

-- reader (query): only SELECT, on what a query's snapshot reads.
GRANT SELECT ON measurements, archive_log, shard_map, shard_moves, shard_move_rows, shard_cutovers
    TO vitalsink_reader;

-- mover (reshard): read, copy in and delete the moving participants' rows, keep the shard map,
-- the moves and their per-participant records, read cut-overs, read ingest_offsets and seed a
-- new shard's.
GRANT SELECT, INSERT, DELETE ON measurements TO vitalsink_mover;
GRANT SELECT, INSERT, DELETE ON shard_move_rows TO vitalsink_mover;
GRANT SELECT, INSERT, UPDATE ON shard_moves TO vitalsink_mover;
GRANT USAGE ON SEQUENCE shard_moves_id_seq TO vitalsink_mover;
GRANT SELECT, INSERT ON shard_map TO vitalsink_mover;
GRANT SELECT ON shard_cutovers TO vitalsink_mover;
GRANT SELECT, INSERT, UPDATE ON ingest_offsets TO vitalsink_mover;

-- Locking and dropping a chunk need privileges the archiver must not have: LOCK TABLE … IN
-- ACCESS EXCLUSIVE MODE needs UPDATE, DELETE, TRUNCATE (or MAINTAIN) on the chunk, and
-- TimescaleDB drops a chunk only for the hypertable's owner. Two SECURITY DEFINER functions,
-- owned by the migrating owner, do exactly that and nothing else: they refuse any relation
-- that is not a chunk of this database's `measurements` hypertable (SQLSTATE 42501). As
-- PostgreSQL's CREATE FUNCTION documentation requires for SECURITY DEFINER, search_path is
-- pinned to pg_catalog then pg_temp, and every other name is schema-qualified, fixed here at
-- migration time. EXECUTE is revoked from PUBLIC and granted to the archiver only.
DO $functions$
DECLARE
    -- The hypertable and TimescaleDB's schema, as quoted SQL names.
    ht  text := format('%I.measurements', current_schema());
    ext text := (SELECT quote_ident(n.nspname)
                   FROM pg_catalog.pg_extension e
                   JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'timescaledb');
    fn   text;
    verb text;
    body text := $body$
        CREATE OR REPLACE FUNCTION @SCHEMA@.vitalsink_@FN@_chunk(chunk regclass) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        BEGIN
            IF chunk IS NULL
               OR NOT chunk = ANY (ARRAY(SELECT @EXT@.show_chunks(@HT@::regclass))) THEN
                RAISE EXCEPTION 'vitalsink_@FN@_chunk: % is not a chunk of hypertable %',
                    chunk, @HT@ USING ERRCODE = 'insufficient_privilege';
            END IF;
            EXECUTE format('@VERB@', chunk);
        END
        $fn$
    $body$;
BEGIN
    FOREACH fn IN ARRAY ARRAY['lock', 'drop'] LOOP
        verb := CASE fn WHEN 'lock' THEN 'LOCK TABLE %s IN ACCESS EXCLUSIVE MODE'
                        ELSE 'DROP TABLE %s' END;
        EXECUTE replace(replace(replace(replace(replace(body,
            '@SCHEMA@', quote_ident(current_schema())),
            '@FN@', fn),
            '@EXT@', ext),
            '@HT@', quote_literal(ht)),
            '@VERB@', verb);
        EXECUTE format('REVOKE ALL ON FUNCTION %I.vitalsink_%s_chunk(regclass) FROM PUBLIC',
                       current_schema(), fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %I.vitalsink_%s_chunk(regclass) TO vitalsink_archiver',
                       current_schema(), fn);
    END LOOP;
END
$functions$;
