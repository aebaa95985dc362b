#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the multi-worker search tests, installing
# Debian's `postgresql` package if needed. Prints the SQLAlchemy URL; the data directory and the
# server go away with `.ci/postgres.sh stop DIR`.
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  su postgres -c "$BIN/pg_ctl -D $2 -m fast -w stop" >/dev/null 2>&1 || true
  rm -rf "$2"
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PORT=${SHALLOWMIMIC_PG_PORT:-54329}
PGDATA=$(mktemp -d /tmp/shallowmimic-pg.XXXXXX)
chown postgres "$PGDATA"
su postgres -c "$BIN/initdb -D $PGDATA -A trust -U postgres" >/dev/null
su postgres -c "$BIN/pg_ctl -D $PGDATA -l $PGDATA/server.log -w \
  -o '-p $PORT -k $PGDATA -c listen_addresses=127.0.0.1' start" >/dev/null
# the bare form the docs show (search.with_driver picks the installed driver)
echo "$PGDATA postgresql://postgres@127.0.0.1:$PORT/postgres"
