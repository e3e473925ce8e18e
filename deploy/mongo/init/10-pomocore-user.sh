#!/bin/bash
# First start only: a least-privilege MongoDB user for pomocore (readWrite on its database).
set -euo pipefail
mongosh --quiet -u "$MONGO_INITDB_ROOT_USERNAME" -p "$(cat "$MONGO_INITDB_ROOT_PASSWORD_FILE")" \
  --authenticationDatabase admin pomocore --eval "
db.createUser({user: 'pomocore', pwd: '$(cat /run/secrets/mongo_app_password)',
               roles: [{role: 'readWrite', db: 'pomocore'}]})"
