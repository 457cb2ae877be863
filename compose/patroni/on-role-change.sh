#!/bin/sh
# Patroni callback (compose/patroni/patroni.yml, on_start and on_role_change): ACTION ROLE
# SCOPE. The binaries pick the primary by target_session_attrs=read-write when they connect
# to a member's PgBouncer; a client connection to PgBouncer outlives the member's server
# connections, so after this member is demoted (or comes back as a replica) the clients
# still connected to its PgBouncer would keep reaching a replica (SQLSTATE 25006). Drop them
# (KILL, then RESUME so that new connections are served): they reconnect, and the
# multi-host check sends them to the new primary.
set -u
role=${2:-}
case "$role" in primary|master|standby_leader) exit 0 ;; esac
PGPASSWORD=$(cat /run/secrets/pg_superuser_password) psql -X -q \
  "host=pgbouncer-$PATRONI_NAME port=6432 dbname=pgbouncer user=postgres sslmode=verify-full sslrootcert=/run/secrets/ca_cert connect_timeout=5" \
  -c 'KILL vitalsink' -c 'RESUME vitalsink' \
  || echo "on-role-change: could not drop the clients of pgbouncer-$PATRONI_NAME" >&2
exit 0
