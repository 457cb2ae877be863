#!/bin/sh
# Patroni's bootstrap.post_bootstrap (compose/patroni/patroni.yml): runs once, on the member
# that initialised the shard, with a superuser connection string as $1. Makes the vitalsink
# database with TimescaleDB, the group roles of schemas/ROLES.md and the binaries' logins
# (passwords from Docker secrets, through stdin), the monitoring login of the exporters and
# Grafana, the objects of ops/postgres-exporter/setup.sql, and the pgBackRest stanza.
set -eu
conn=$1
psql -d "$conn" -v ON_ERROR_STOP=1 -qX -c 'CREATE DATABASE vitalsink'
# `\connect vitalsink` keeps the host, port and user of Patroni's connection string.
{
  echo '\connect vitalsink'
  echo "CREATE EXTENSION IF NOT EXISTS timescaledb;"
  for r in vitalsink_ingest vitalsink_archiver vitalsink_reader vitalsink_mover; do
    echo "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$r') THEN CREATE ROLE $r NOLOGIN; END IF; END \$\$;"
  done
  echo "CREATE ROLE ingest LOGIN IN ROLE vitalsink_ingest PASSWORD '$(cat /run/secrets/pg_ingest_password)';"
  echo "CREATE ROLE archiver LOGIN IN ROLE vitalsink_archiver PASSWORD '$(cat /run/secrets/pg_archiver_password)';"
  echo "CREATE ROLE query LOGIN IN ROLE vitalsink_reader PASSWORD '$(cat /run/secrets/pg_query_password)';"
  echo "CREATE ROLE reshard LOGIN IN ROLE vitalsink_mover PASSWORD '$(cat /run/secrets/pg_reshard_password)';"
  echo "CREATE ROLE monitor LOGIN IN ROLE pg_monitor, vitalsink_reader PASSWORD '$(cat /run/secrets/pg_monitor_password)';"
} | psql -d "$conn" -v ON_ERROR_STOP=1 -qX
{ echo '\connect vitalsink'; cat /etc/vitalsink/ops/setup.sql; } | psql -d "$conn" -v ON_ERROR_STOP=1 -qX
pgbackrest stanza-create || echo "pgbackrest stanza-create failed; the backup loop retries" >&2
