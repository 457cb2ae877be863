#!/bin/sh
# Runs once when a shard's data directory is created (the image's /docker-entrypoint-initdb.d):
# the login users of the binaries, members of the group roles of schemas/ROLES.md (made here
# so that the migration finds them; it creates them only when missing), with passwords from
# Docker secrets. The passwords go through stdin, not a command line.
set -eu
{
  for r in vitalsink_ingest vitalsink_archiver vitalsink_reader vitalsink_mover; do
    echo "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$r') THEN CREATE ROLE $r NOLOGIN; END IF; END \$\$;"
  done
  echo "CREATE ROLE ingest LOGIN IN ROLE vitalsink_ingest PASSWORD '$(cat /run/secrets/pg_ingest_password)';"
  echo "CREATE ROLE archiver LOGIN IN ROLE vitalsink_archiver PASSWORD '$(cat /run/secrets/pg_archiver_password)';"
} | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -q
