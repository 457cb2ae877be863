#!/bin/bash
# The kafka service's command: formats the storage once with the SCRAM users (KRaft keeps them
# in its metadata log), then starts the broker with the INTERNAL listener's login. Passwords
# come from Docker secrets and never reach a file of the image or the compose file.
set -euo pipefail
props=/etc/vitalsink/kafka/server.properties
admin_pw=$(cat /run/secrets/kafka_admin_password)
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  /opt/kafka/bin/kafka-storage.sh format --config "$props" --cluster-id "${KAFKA_CLUSTER_ID:?}" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" \
    --add-scram "SCRAM-SHA-512=[name=vitalsink,password=$(cat /run/secrets/kafka_password)]"
fi
# For the healthcheck (inside the container only).
umask 077
cat >/tmp/admin.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/ca_cert
PROPS
exec /opt/kafka/bin/kafka-server-start.sh "$props" --override \
  "listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin_pw\";"
