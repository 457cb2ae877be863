-- vitalsink schema version 11: the archiver's three chunk functions (migrations 9 and 10)
-- recognise a chunk by reading the catalogs instead of calling TimescaleDB's `show_chunks`.
--
-- `show_chunks` fails with "no chunk found with ID <n>" (SQLSTATE XX000) when a chunk of the
-- hypertable is dropped, in another session, while it scans the catalog: reproduced on this
-- stack (TimescaleDB 2.19) with one session dropping chunks one transaction each and another
-- calling migration 10's check in a loop, 183 of 231 calls failed; in the archiver this is the
-- SHARE lock on chunk k+1 taken while chunk k's drop commits, which then went without its
-- lock (README, "Benchmarks", growth: 2-3 of 106 chunks). It also reads the whole catalog:
-- about 20 ms a call with 1,000 chunks.
--
-- So the check now reads the two catalogs directly, without turning any other chunk into a
-- relation: the relation must be an inheritance child of `measurements` (`pg_inherits`, one
-- index probe on `inhrelid`; every TimescaleDB chunk inherits from its hypertable) and be
-- listed, not dropped, in TimescaleDB's chunk catalog under that hypertable
-- (`_timescaledb_catalog.chunk` and `.hypertable`, by schema and table name). The second part
-- is needed: the hypertable's owner can make an ordinary table a child of it (PostgreSQL docs,
-- ALTER TABLE, INHERIT: "you must own the parent table as well"; TimescaleDB 2.19 does not
-- refuse it, seen here), and the archiver must not lock or drop such a table. The refusals are
-- those of before (the hypertable itself, `ingest_offsets`, another hypertable's chunk, an
-- owner's child table, NULL: SQLSTATE 42501). The same loop as above: 0 errors in 99,284 and
-- 85,459 calls during the drops (5 s each, 1,000 chunks). The functions are otherwise as they
-- were: SECURITY DEFINER, search_path pinned, every name qualified, EXECUTE for the archiver
-- only (schemas/ROLES.md).
DO $functions$
DECLARE
    ht   text := format('%I.measurements', current_schema());
    fn   text;
    verb text;
    body text := $body$
        CREATE OR REPLACE FUNCTION @SCHEMA@.vitalsink_@FN@_chunk(chunk regclass) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
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
                RAISE EXCEPTION 'vitalsink_@FN@_chunk: % is not a chunk of hypertable %',
                    chunk, @HT@ USING ERRCODE = 'insufficient_privilege';
            END IF;
            EXECUTE format('@VERB@', chunk);
        END
        $fn$
    $body$;
BEGIN
    FOREACH fn IN ARRAY ARRAY['lock', 'drop', 'share_lock'] LOOP
        verb := CASE fn WHEN 'lock' THEN 'LOCK TABLE %s IN ACCESS EXCLUSIVE MODE'
                        WHEN 'share_lock' THEN 'LOCK TABLE %s IN SHARE MODE'
                        ELSE 'DROP TABLE %s' END;
        EXECUTE replace(replace(replace(replace(replace(body,
            '@SCHEMA@', quote_ident(current_schema())),
            '@FN@', fn),
            '@HTNSP@', quote_literal(current_schema())),
            '@HT@', quote_literal(ht)),
            '@VERB@', verb);
        EXECUTE format('REVOKE ALL ON FUNCTION %I.vitalsink_%s_chunk(regclass) FROM PUBLIC',
                       current_schema(), fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %I.vitalsink_%s_chunk(regclass) TO vitalsink_archiver',
                       current_schema(), fn);
    END LOOP;
END
$functions$;
