#!/usr/bin/env bash
# The main job end to end on local defaults, for a newcomer on a fresh machine:
# builds the tools, starts a throwaway PostgreSQL 15 cluster that archives its WAL with
# wal-archive, loads pgbench data, takes a base backup, keeps writing, notes a point in time,
# "loses" a table, restores to that point with pitr-restore --start, checks the data that came
# back and prints the measured restore time. Everything lives in a temporary directory that is
# removed at the end; nothing listens beyond 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/install-deps.sh
echo "quickstart: building the tools (release)" >&2
cargo build --release -q -p pg-base-backup -p wal-archive -p pitr-restore
BIN=$ROOT/target/release
PG_BIN=/usr/lib/postgresql/15/bin

WORK=$(mktemp -d /tmp/pipeline-backup-quickstart.XXXXXX)
chmod 755 "$WORK"
# PostgreSQL refuses to run as root: the cluster and the tools touching it run as postgres.
as_db() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env HOME="$WORK" "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"

cleanup() {
    as_db "$PG_BIN/pg_ctl" -D "$WORK/restored" -m immediate stop >/dev/null 2>&1 || true
    as_db "$PG_BIN/pg_ctl" -D "$WORK/source" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SRC_PORT=$(port)
DST_PORT=$(port)
export BACKUP_DIR=$WORK/backups PGHOST=$WORK PGPORT=$SRC_PORT PGUSER=postgres PGDATABASE=postgres
as_db mkdir -p "$BACKUP_DIR"

echo "quickstart: source cluster on port $SRC_PORT, archiving into $BACKUP_DIR/wal" >&2
as_db "$PG_BIN/initdb" -D "$WORK/source" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >>"$WORK/source/postgresql.conf" <<CONF
port = $SRC_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
archive_mode = on
archive_command = '$BIN/wal-archive push %p --backup-dir $BACKUP_DIR -q'
CONF
echo "local replication all trust" >>"$WORK/source/pg_hba.conf"
as_db "$PG_BIN/pg_ctl" -D "$WORK/source" -l "$WORK/source.log" -w start >/dev/null

psql_src() { as_db "$PG_BIN/psql" -X -At -v ON_ERROR_STOP=1 -c "$1"; }
as_db "$PG_BIN/pgbench" -i -s 10 -q >/dev/null 2>&1
as_db mkdir -p "$BACKUP_DIR/wal"

echo "quickstart: pg-base-backup" >&2
as_db "$BIN/pg-base-backup" --compress zstd
echo "quickstart: 5 s of pgbench traffic after the backup" >&2
as_db "$PG_BIN/pgbench" -n -c 2 -T 5 >/dev/null 2>&1
EXPECTED=$(psql_src "SELECT count(*) || ' rows, balance ' || sum(abalance) FROM pgbench_accounts")
HISTORY=$(psql_src "SELECT count(*) FROM pgbench_history")
sleep 1
TARGET=$(psql_src "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
sleep 1
echo "quickstart: disaster: pgbench_history dropped after $TARGET" >&2
psql_src "DROP TABLE pgbench_history" >/dev/null
psql_src "SELECT pg_switch_wal()" >/dev/null
as_db "$BIN/wal-archive" verify

echo "quickstart: pitr-restore to $TARGET" >&2
as_db "$BIN/pitr-restore" --pgdata "$WORK/restored" --target-time "$TARGET" \
    --start --port "$DST_PORT" --socket-dir "$WORK" --yes
psql_dst() { as_db "$PG_BIN/psql" -X -At -p "$DST_PORT" -h "$WORK" -c "$1"; }
GOT=$(psql_dst "SELECT count(*) || ' rows, balance ' || sum(abalance) FROM pgbench_accounts")
GOT_HISTORY=$(psql_dst "SELECT count(*) FROM pgbench_history")
echo "source before the disaster: $EXPECTED, $HISTORY history rows"
echo "restored:                   $GOT, $GOT_HISTORY history rows"
if [ "$GOT" = "$EXPECTED" ] && [ "$GOT_HISTORY" = "$HISTORY" ]; then
    echo "quickstart: OK, the restore brought back exactly the data of $TARGET"
else
    echo "quickstart: MISMATCH" >&2
    exit 1
fi
