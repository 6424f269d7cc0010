#!/usr/bin/env bash
# Benchmark of pg-logical-backup against bare `pg_dump -Fc` on the same pgbench database,
# in one run (issue 4):
#
#   goal 1: the whole-database part of our backup within 1.05x of bare pg_dump's wall time
#   goal 2: with --jobs 2 (directory format) faster than bare pg_dump
#   goal 3: peak memory of our own process under 100 MB
#
# Usage: scripts/bench-logical.sh            (pgbench scale 100, about 1.5 GB)
#        SCALE=10 scripts/bench-logical.sh   (quick run, about 150 MB)
# Env: SCALE, BIN (tool binary; default: a release build made here), PG_BIN_DIR,
#      KEEP=1 to keep the cluster directory. Prints a table on stdout; exit 1 when a goal is
#      missed (STRICT=0 to always exit 0).
# Runs a throwaway cluster on 127.0.0.1 / a socket in a temp dir; as root, the servers and
# tools run as the `postgres` OS user.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-100}
PG_BIN_DIR=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
STRICT=${STRICT:-1}
if [ -z "${BIN:-}" ]; then
    cargo build --release -p pg-logical-backup >&2
    BIN=${CARGO_TARGET_DIR:-target}/release/pg-logical-backup
fi
BIN=$(realpath "$BIN")

as_db_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

WORK=$(mktemp -d /tmp/bench-logical-XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    as_db_user "$PG_BIN_DIR/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench: cluster in $WORK, pgbench scale $SCALE" >&2
as_db_user "$PG_BIN_DIR/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync >/dev/null
cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
fsync = off
shared_buffers = 256MB
max_wal_size = 4GB
EOF
as_db_user "$PG_BIN_DIR/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null

export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
as_db_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres "$PG_BIN_DIR/createdb" bench
as_db_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=bench \
    "$PG_BIN_DIR/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
SIZE=$(as_db_user env PGHOST="$PGHOST" PGPORT="$PGPORT" "$PG_BIN_DIR/psql" -X -At -U postgres -d bench \
    -c "SELECT pg_size_pretty(pg_database_size('bench'))")
echo "bench: database size $SIZE" >&2

run_pg() {
    as_db_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres PGDATABASE=bench \
        BACKUP_DIR="$WORK/repo" BACKUP_NO_PROGRESS=1 PG_BIN_DIR="$PG_BIN_DIR" "$@"
}

# Warm the page cache so the first contender does not pay for it alone.
run_pg "$PG_BIN_DIR/pg_dump" -Fc --no-sync -f "$WORK/warm.dump"
rm -f "$WORK/warm.dump"

t0=$(now)
run_pg "$PG_BIN_DIR/pg_dump" -Fc -f "$WORK/bare.dump"
BARE=$(elapsed "$t0" "$(now)")
rm -f "$WORK/bare.dump"

summary_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

t0=$(now)
OURS_JSON=$(run_pg "$BIN" -q --no-table-dumps --no-globals --no-retention --output json)
OURS_WALL=$(elapsed "$t0" "$(now)")
OURS_FULL=$(python3 -c "print(f'{$(echo "$OURS_JSON" | summary_field full_dump_secs):.2f}')")
OURS_RSS=$(echo "$OURS_JSON" | summary_field peak_rss_bytes)
rm -rf "$WORK/repo/logical"

t0=$(now)
JOBS_JSON=$(run_pg "$BIN" -q --jobs 2 --no-table-dumps --no-globals --no-retention --output json)
JOBS_WALL=$(elapsed "$t0" "$(now)")
JOBS_RSS=$(echo "$JOBS_JSON" | summary_field peak_rss_bytes)
rm -rf "$WORK/repo/logical"

t0=$(now)
FULL_JSON=$(run_pg "$BIN" -q --no-retention --output json)
FULL_WALL=$(elapsed "$t0" "$(now)")
FULL_RSS=$(echo "$FULL_JSON" | summary_field peak_rss_bytes)
PEAK_RSS=$(printf '%s\n' "$OURS_RSS" "$JOBS_RSS" "$FULL_RSS" | sort -n | tail -1)

R_FULL=$(ratio "$OURS_WALL" "$BARE")
R_JOBS=$(ratio "$JOBS_WALL" "$BARE")
R_ALL=$(ratio "$FULL_WALL" "$BARE")
PEAK_MB=$(python3 -c "print(f'{$PEAK_RSS / 1048576:.1f}')")

printf '%-52s %10s %8s\n' "run (database $SIZE, scale $SCALE)" "seconds" "ratio"
printf '%-52s %10s %8s\n' "bare pg_dump -Fc" "$BARE" "1.000"
printf '%-52s %10s %8s\n' "pg-logical-backup, whole database only" "$OURS_WALL" "$R_FULL"
printf '%-52s %10s %8s\n' "  of which the pg_dump of the whole database" "$OURS_FULL" "$(ratio "$OURS_FULL" "$BARE")"
printf '%-52s %10s %8s\n' "pg-logical-backup --jobs 2, whole database only" "$JOBS_WALL" "$R_JOBS"
printf '%-52s %10s %8s\n' "pg-logical-backup, full set (tables, schema, globals)" "$FULL_WALL" "$R_ALL"
printf 'peak memory of pg-logical-backup: %s MB\n' "$PEAK_MB"

fail=0
check() {
    if python3 -c "import sys; sys.exit(0 if $2 else 1)"; then
        echo "PASS $1"
    else
        echo "MISS $1"
        fail=1
    fi
}
check "whole-database part within 1.05x of bare pg_dump ($R_FULL)" "$R_FULL <= 1.05"
check "--jobs 2 faster than bare pg_dump ($R_JOBS)" "$R_JOBS < 1.0"
check "peak memory under 100 MB ($PEAK_MB MB)" "$PEAK_RSS < 100 * 1048576"
if [ "$STRICT" = 1 ]; then
    exit "$fail"
fi
