-- vitalsink monitoring: objects the PostgreSQL exporter's queries (queries.yaml) need, on the
-- database the exporter connects to (each shard's `vitalsink` database). Idempotent: run it
-- as a superuser after every upgrade (dev/monitoring exporter-up does).
--
-- Backup age, after pgBackRest's user guide, section "Monitoring": a function runs
-- `pgbackrest --output=json info` through COPY ... FROM PROGRAM on the database server (so
-- pgbackrest and its configuration must be on the server's host; the server's environment
-- variable PGBACKREST_CONFIG, if set, names the configuration file) and returns, per stanza,
-- the stop time of the newest backup that did not end in error.
CREATE SCHEMA IF NOT EXISTS ops;

-- The parsed output of `pgbackrest --output=json info`: a JSON array, one element per stanza
-- ('[]' when no stanza exists). NULL on a standby (a temporary table cannot be made there,
-- and the primary reports the same repository). A failing pgbackrest is an error, so that
-- the exporter's backup metric disappears and the BackupMissing alert fires.
CREATE OR REPLACE FUNCTION ops.pgbackrest_info() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    doc text;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN NULL;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS vitalsink_pgbackrest_info (line text) ON COMMIT DROP;
    TRUNCATE vitalsink_pgbackrest_info;
    -- CSV with a quote and a delimiter that JSON text never holds: every line is read as it
    -- is (the text format would turn the backslash escapes of JSON strings into characters).
    COPY vitalsink_pgbackrest_info (line) FROM PROGRAM 'pgbackrest --output=json info'
        WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
    SELECT string_agg(line, E'\n') INTO doc FROM vitalsink_pgbackrest_info;
    RETURN coalesce(nullif(doc, ''), '[]')::jsonb;
END
$fn$;

-- Per stanza: the stop time of its newest successful backup (NULL when it has none yet).
-- No rows when pgBackRest knows no stanza, or on a standby.
CREATE OR REPLACE FUNCTION ops.backup_last_success()
RETURNS TABLE (stanza text, last_success timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT s->>'name',
           to_timestamp(max((b->'timestamp'->>'stop')::float8)
                        FILTER (WHERE NOT coalesce((b->>'error')::boolean, false)))
      FROM jsonb_array_elements(coalesce(ops.pgbackrest_info(), '[]'::jsonb)) s
      LEFT JOIN LATERAL jsonb_array_elements(coalesce(s->'backup', '[]'::jsonb)) b ON true
     GROUP BY 1
$fn$;

-- Expected readings per hour of a metric, when the study defines one: the completeness panel
-- "Readings per hour against the expected rate" of ops/grafana/vitalsink.json uses it before
-- its default (3600 / the median interval between a participant's consecutive readings of the
-- metric over the last 24 hours). Empty unless the study fills it.
CREATE TABLE IF NOT EXISTS ops.expected_rates (
    metric   text             PRIMARY KEY,
    per_hour double precision NOT NULL CHECK (per_hour > 0),
    note     text
);

REVOKE ALL ON FUNCTION ops.pgbackrest_info() FROM PUBLIC;
REVOKE ALL ON FUNCTION ops.backup_last_success() FROM PUBLIC;
GRANT USAGE ON SCHEMA ops TO pg_monitor;
GRANT EXECUTE ON FUNCTION ops.pgbackrest_info() TO pg_monitor;
GRANT EXECUTE ON FUNCTION ops.backup_last_success() TO pg_monitor;
GRANT SELECT ON ops.expected_rates TO pg_monitor;
