#!/bin/bash
# First start only: a least-privilege MongoDB user for pomocore (readWrite on its database).
#
# No password on a command line: a process's arguments are readable by every user of the
# container (ps, /proc/<pid>/cmdline), its environment only by its own user and root. The
# image's entrypoint sources this file after reading MONGO_INITDB_ROOT_PASSWORD_FILE into
# MONGO_INITDB_ROOT_PASSWORD (and unsetting the _FILE variable); mongosh gets its script
# on stdin (a quoted heredoc: the shell expands nothing in it) and reads both passwords
# itself, from that variable and from MONGO_APP_PASSWORD_FILE.
set -euo pipefail
mongosh --quiet --host 127.0.0.1 --port 27017 admin <<'JS'
const secretFile = (path) => fs.readFileSync(path, 'utf8').replace(/\n+$/, '');
const env = process.env;
const rootPassword = env.MONGO_INITDB_ROOT_PASSWORD || secretFile(env.MONGO_INITDB_ROOT_PASSWORD_FILE);
db.auth(env.MONGO_INITDB_ROOT_USERNAME, rootPassword);
db.getSiblingDB('pomocore').createUser({
  user: 'pomocore',
  pwd: secretFile(env.MONGO_APP_PASSWORD_FILE),
  roles: [{role: 'readWrite', db: 'pomocore'}],
});
JS
