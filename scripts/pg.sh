#!/usr/bin/env bash
# A private Postgres server for the tests: Debian's postgresql-15 binaries, a fresh
# cluster in DIR, listening only on a Unix socket in DIR (no TCP port, so several runs
# can coexist), fsync off unless PG_FSYNC=on (the tests check semantics; durability across a crash of the
# machine is Postgres's own business).
#
#   scripts/pg.sh start DIR   initdb (when DIR has no cluster) and start; prints the
#                             libpq connection string on stdout
#   scripts/pg.sh stop DIR    stop the server (fast shutdown)
#   scripts/pg.sh kill DIR    stop it the way a crash would (immediate shutdown)
#
# Exits 3 with a message when no Postgres can be found or installed.
set -euo pipefail

cmd=${1:?usage: pg.sh start|stop|kill DIR}
dir=${2:?usage: pg.sh start|stop|kill DIR}

bin=""
for candidate in /usr/lib/postgresql/*/bin; do
  [[ -x $candidate/initdb ]] && bin=$candidate
done
if [[ -z $bin ]] && [[ $cmd == start ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "pg.sh: installing postgresql-15 (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2 || true
  for candidate in /usr/lib/postgresql/*/bin; do
    [[ -x $candidate/initdb ]] && bin=$candidate
  done
fi
if [[ -z $bin ]]; then
  echo "pg.sh: no Postgres server binaries (install Debian's postgresql-15)" >&2
  exit 3
fi

# initdb and the server refuse to run as root: run them as the postgres user then.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case $cmd in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) == 0 ]]; then
      chown postgres: "$dir"
    fi
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync --no-instructions \
        -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p 5432 -k $dir -c listen_addresses='' -c fsync=${PG_FSYNC:-off} -c max_connections=200" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "host=$dir port=5432 user=postgres dbname=postgres"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  kill)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  *)
    echo "usage: pg.sh start|stop|kill DIR" >&2
    exit 2
    ;;
esac
