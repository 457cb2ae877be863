-- vitalsink schema version 10: the archiver's SHARE lock on a chunk it exports
-- (schemas/ROLES.md, "The SECURITY DEFINER functions").
--
-- The archiver holds `LOCK TABLE <chunk> IN SHARE MODE` from before the snapshot its export
-- reads until the transaction that drops the chunk: SHARE conflicts with the ROW EXCLUSIVE
-- lock every INSERT, UPDATE and DELETE takes (PostgreSQL docs, "Explicit Locking", table
-- "Conflicting Lock Modes"), so no row of the chunk can change between the snapshot and the
-- drop, and the drop needs no re-count of the chunk. Like ACCESS EXCLUSIVE, SHARE needs
-- UPDATE, DELETE, TRUNCATE or MAINTAIN on the chunk (PostgreSQL docs, LOCK), which the
-- archiver must not have; so this is a third SECURITY DEFINER function written exactly as
-- migration 9's two: search_path pinned, every other name qualified at migration time,
-- refusing (42501) any relation that is not a chunk of this database's `measurements`,
-- EXECUTE revoked from PUBLIC and granted to the archiver only.
DO $functions$
DECLARE
    ht  text := format('%I.measurements', current_schema());
    ext text := (SELECT quote_ident(n.nspname)
                   FROM pg_catalog.pg_extension e
                   JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'timescaledb');
BEGIN
    EXECUTE replace(replace(replace($body$
        CREATE OR REPLACE FUNCTION @SCHEMA@.vitalsink_share_lock_chunk(chunk regclass) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        BEGIN
            IF chunk IS NULL
               OR NOT chunk = ANY (ARRAY(SELECT @EXT@.show_chunks(@HT@::regclass))) THEN
                RAISE EXCEPTION 'vitalsink_share_lock_chunk: % is not a chunk of hypertable %',
                    chunk, @HT@ USING ERRCODE = 'insufficient_privilege';
            END IF;
            EXECUTE format('LOCK TABLE %s IN SHARE MODE', chunk);
        END
        $fn$
    $body$,
        '@SCHEMA@', quote_ident(current_schema())),
        '@EXT@', ext),
        '@HT@', quote_literal(ht));
    EXECUTE format('REVOKE ALL ON FUNCTION %I.vitalsink_share_lock_chunk(regclass) FROM PUBLIC',
                   current_schema());
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.vitalsink_share_lock_chunk(regclass) TO vitalsink_archiver',
                   current_schema());
END
$functions$;
