#!/bin/sh
# Entrypoint of a shard member (compose/docker-compose.yml): Docker secrets into the
# environment Patroni and pgBackRest read (never into the compose file), the TLS key with the
# mode PostgreSQL demands, the backup schedule in the background, then Patroni.
#   PGBACKREST_STANZA   the shard's stanza (shard0, ...), set by the compose file
#   BACKUP_EVERY        seconds between scheduled backups (default 86400)
#   BACKUP_FULL_EVERY   every how many scheduled backups is a full one (default 7; the
#                       others are differential)
set -eu
PATRONI_SUPERUSER_PASSWORD=$(cat /run/secrets/pg_superuser_password)
PATRONI_REPLICATION_PASSWORD=$(cat /run/secrets/pg_replication_password)
PATRONI_REWIND_PASSWORD=$PATRONI_SUPERUSER_PASSWORD
PGBACKREST_REPO1_S3_KEY=$(cat /run/secrets/s3_access_key)
PGBACKREST_REPO1_S3_KEY_SECRET=$(cat /run/secrets/s3_secret_key)
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD PATRONI_REWIND_PASSWORD \
  PGBACKREST_REPO1_S3_KEY PGBACKREST_REPO1_S3_KEY_SECRET
install -m 600 /run/secrets/server_key /home/postgres/server.key
mkdir -p /home/postgres/pgdata

# The backup schedule: only the current primary backs up (pgBackRest reads its data
# directory); `stanza-create` is idempotent and makes the stanza after the first bootstrap.
(
  n=0
  while sleep "${BACKUP_EVERY:-86400}"; do
    primary=$(psql -h /tmp -U postgres -d postgres -tAXc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null || true)
    [ "$primary" = t ] || continue
    if [ $((n % ${BACKUP_FULL_EVERY:-7})) -eq 0 ]; then type=full; else type=diff; fi
    n=$((n + 1))
    pgbackrest stanza-create >/dev/null 2>&1 || true
    pgbackrest backup --type="$type" || echo "pgbackrest backup --type=$type failed" >&2
  done
) &

exec patroni /etc/vitalsink/patroni/patroni.yml
