-- vitalsink schema version 13: the archiver may delete, from a chunk of `measurements` only,
-- readings that the archive already holds (a resend that came after its day was archived;
-- schemas/README.md, "A reading's identity"), without the DELETE privilege on the table.
--
-- `vitalsink_delete_archived(chunk, …identity arrays…)` deletes the chunk's rows whose identity
-- (participant_id, ts, metric, coalesce(device_id, ''), value, occurrence) is one of the given
-- ones, and returns how many it deleted. Like the chunk functions of migrations 9-11 it is
-- SECURITY DEFINER with a pinned search_path, refuses any relation that is not a live chunk of
-- this schema's `measurements` (SQLSTATE 42501, the same catalog check as migration 11), and
-- only the archiver may call it (schemas/ROLES.md). A NULL occurrence never matches, so rows
-- written before schema version 12 are never deleted by it. The archiver, which may already
-- drop whole chunks through vitalsink_drop_chunk, gains no access to other tables.
DO $function$
DECLARE
    ht text := format('%I.measurements', current_schema());
    body text := $body$
        CREATE OR REPLACE FUNCTION @SCHEMA@.vitalsink_delete_archived(
            chunk regclass, participant_ids text[], metrics text[], tss timestamptz[],
            vals double precision[], device_ids text[], occurrences smallint[]) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        DECLARE
            n bigint;
        BEGIN
            IF chunk IS NULL
               OR NOT EXISTS (
                   SELECT 1
                     FROM pg_catalog.pg_inherits i
                     JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     JOIN _timescaledb_catalog.chunk k
                       ON k.schema_name = n.nspname AND k.table_name = c.relname AND NOT k.dropped
                     JOIN _timescaledb_catalog.hypertable h
                       ON h.id = k.hypertable_id AND h.schema_name = @HTNSP@
                      AND h.table_name = 'measurements'
                    WHERE i.inhrelid = chunk AND i.inhparent = @HT@::regclass) THEN
                RAISE EXCEPTION 'vitalsink_delete_archived: % is not a chunk of hypertable %',
                    chunk, @HT@ USING ERRCODE = 'insufficient_privilege';
            END IF;
            EXECUTE format(
                'DELETE FROM %s c
                   USING unnest($1, $2, $3, $4, $5, $6) AS t(participant_id, metric, ts, value, device_id, occurrence)
                  WHERE c.participant_id = t.participant_id AND c.ts = t.ts AND c.metric = t.metric
                    AND coalesce(c.device_id, '''') = coalesce(t.device_id, '''')
                    AND c.value = t.value AND c.occurrence = t.occurrence', chunk)
                USING participant_ids, metrics, tss, vals, device_ids, occurrences;
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END
        $fn$
    $body$;
BEGIN
    EXECUTE replace(replace(replace(body,
        '@SCHEMA@', quote_ident(current_schema())),
        '@HTNSP@', quote_literal(current_schema())),
        '@HT@', quote_literal(ht));
    EXECUTE format('REVOKE ALL ON FUNCTION %I.vitalsink_delete_archived(regclass, text[], text[], timestamptz[], double precision[], text[], smallint[]) FROM PUBLIC',
                   current_schema());
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.vitalsink_delete_archived(regclass, text[], text[], timestamptz[], double precision[], text[], smallint[]) TO vitalsink_archiver',
                   current_schema());
END
$function$;
