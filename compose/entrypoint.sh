#!/bin/sh
# The vitalsink image's entrypoint: `NAME_FILE=/run/secrets/x` sets NAME from the file (Docker
# secrets) for the variables the binaries read from the environment (the S3 keys), then runs
# the command.
set -eu
for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
  eval "file=\${${name}_FILE:-}"
  if [ -n "$file" ]; then
    export "$name=$(cat "$file")"
    unset "${name}_FILE"
  fi
done
exec "$@"
