#!/bin/bash
# Starts PostgreSQL as the postgres user; on the first start (empty data directory) runs
# initdb and creates the application role and database. Runs in a read-only container: the
# only writable places are $PGDATA (a volume) and /tmp (a tmpfs, for the unix socket).
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=tollgate}" "${POSTGRES_DB:=tollgate}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "tollgate-postgres: POSTGRES_PASSWORD must be set (deploy/up.sh writes one into deploy/.env)" >&2
  exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp /tmp/pw.XXXXXX)"
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
  # Other containers reach the server over the compose network: password (SCRAM) only.
  printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  # Identifiers and the password go in as SQL literals: double any quote they contain.
  user_ident="\"${POSTGRES_USER//\"/\"\"}\""
  db_ident="\"${POSTGRES_DB//\"/\"\"}\""
  pw_literal="'${POSTGRES_PASSWORD//\'/\'\'}'"
  postgres --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null <<SQL
CREATE ROLE $user_ident LOGIN PASSWORD $pw_literal;
CREATE DATABASE $db_ident OWNER $user_ident;
SQL
  rm -f "$pwfile"
  echo "tollgate-postgres: initialised $PGDATA (role $POSTGRES_USER, database $POSTGRES_DB)"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp \
  -c password_encryption=scram-sha-256 "$@"
