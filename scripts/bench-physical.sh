#!/usr/bin/env bash
# Benchmark of physical backup and restore, side by side in one run, on one pgbench database
# (scale 100 by default, about 1.5 GB): pg-base-backup vs `pg_basebackup -Ft -z` vs pgBackRest
# (process-max 2, gz and zst), and restore by pitr-restore vs `pgbackrest restore`; and the
# cost of encryption at rest (zstd + age vs zstd: backup, restore, and wal-archive push of
# real WAL segments).
# Prints the median wall time and peak memory of each, and the ratios the goals are stated in.
#
#   scripts/bench-physical.sh [SCALE] [RUNS]      defaults: 100 3
#
# Needs root or the postgres user; installs pgbackrest and GNU time if missing. Noisy
# machines: compare the ratios of one run, not absolute numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${1:-100}
RUNS=${2:-3}
PG_BIN=/usr/lib/postgresql/15/bin

need=()
command -v pgbackrest >/dev/null || need+=(pgbackrest)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-deps.sh
cargo build --release -q -p pg-base-backup -p wal-archive -p pitr-restore
BIN=$ROOT/target/release

WORK=$(mktemp -d /tmp/bench-physical.XXXXXX)
chmod 755 "$WORK"
as_db() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env HOME="$WORK" "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
cleanup() {
    as_db "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
as_db "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust --locale=C >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_wal_size = 4GB
CONF
echo "local replication all trust" >>"$WORK/data/pg_hba.conf"
as_db "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
echo "bench: pgbench -i -s $SCALE" >&2
as_db "$PG_BIN/pgbench" -i -s "$SCALE" -q >/dev/null 2>&1
SIZE=$(as_db "$PG_BIN/psql" -XAtc "SELECT pg_size_pretty(pg_database_size('postgres'))")
echo "bench: database size $SIZE, $RUNS runs each" >&2

cat >"$WORK/pgbackrest.conf" <<CONF
[global]
repo1-path=$WORK/pgbackrest-repo
process-max=2
start-fast=y
archive-check=n
log-level-console=warn
log-path=$WORK
lock-path=$WORK

[bench]
pg1-path=$WORK/data
pg1-port=$PORT
pg1-socket-path=$WORK
CONF
as_db mkdir -p "$WORK/pgbackrest-repo"
as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench stanza-create >/dev/null

# Encryption at rest (age): a key pair for the encrypted rows (the public key may be on argv,
# the identity file is only named).
age-keygen -o "$WORK/age-identity.txt" 2>/dev/null
AGE_RECIPIENT=$(sed -n 's/^# public key: //p' "$WORK/age-identity.txt")
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/age-identity.txt"

# WAL segments to push: real ones from pgbench's load, copied out of pg_wal.
WAL_PUSHES=20
as_db mkdir -p "$WORK/wal-src"
for f in $(ls "$WORK/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -n "$WAL_PUSHES"); do
    as_db cp "$WORK/data/pg_wal/$f" "$WORK/wal-src/$f"
done
WAL_PUSHES=$(ls "$WORK/wal-src" | wc -l)
# pushes every copied segment into the archive at $1, one wal-archive process each, as
# archive_command does.
cat >"$WORK/push-all.sh" <<'SH'
#!/usr/bin/env bash
set -e
for f in "$2"/*; do "$1" push "$f" --backup-dir "$3" -q; done
SH
chmod 755 "$WORK/push-all.sh"

# measure NAME COMMAND...: appends "seconds maxrss_kb" to $WORK/NAME.txt
measure() {
    local name=$1; shift
    sync
    as_db /usr/bin/time -f "%e %M" -o "$WORK/$name.last" "$@" >/dev/null 2>"$WORK/$name.err" || {
        echo "bench: $name failed:" >&2; cat "$WORK/$name.err" >&2; exit 2; }
    cat "$WORK/$name.last" >>"$WORK/$name.txt"
}

for run in $(seq 1 "$RUNS"); do
    echo "bench: run $run/$RUNS" >&2
    as_db rm -rf "$WORK/repo" "$WORK/repo-age" "$WORK/pgbb"
    measure ours_gzip "$BIN/pg-base-backup" --backup-dir "$WORK/repo" --compress gzip --wal-method fetch --no-retention -q
    measure ours_zstd "$BIN/pg-base-backup" --backup-dir "$WORK/repo" --compress zstd --wal-method fetch --no-retention -q
    measure ours_zstd_age env BACKUP_ENCRYPTION_RECIPIENTS="$AGE_RECIPIENT" \
        "$BIN/pg-base-backup" --backup-dir "$WORK/repo-age" --compress zstd --wal-method fetch --no-retention -q
    measure pg_basebackup_gz "$PG_BIN/pg_basebackup" -D "$WORK/pgbb" -Ft -z -X fetch -c fast
    measure pgbackrest_gz pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=full --compress-type=gz backup
    measure pgbackrest_zst pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=full --compress-type=zst backup
    as_db rm -rf "$WORK/wal-repo" "$WORK/wal-repo-age"
    measure wal_push "$WORK/push-all.sh" "$BIN/wal-archive" "$WORK/wal-src" "$WORK/wal-repo"
    measure wal_push_age env BACKUP_ENCRYPTION_RECIPIENTS="$AGE_RECIPIENT" \
        "$WORK/push-all.sh" "$BIN/wal-archive" "$WORK/wal-src" "$WORK/wal-repo-age"
    as_db rm -rf "$WORK/r1" "$WORK/r2" "$WORK/r3"
    measure ours_restore "$BIN/pitr-restore" --backup-dir "$WORK/repo" --pgdata "$WORK/r1" --target immediate --yes -q
    measure ours_restore_age env BACKUP_ENCRYPTION_IDENTITY_FILE="$WORK/age-identity.txt" \
        "$BIN/pitr-restore" --backup-dir "$WORK/repo-age" --pgdata "$WORK/r3" --target immediate --yes -q
    measure pgbackrest_restore pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/r2" restore
    as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench expire --repo1-retention-full=1 >/dev/null 2>&1 || true
done

python3 - "$WORK" "$WAL_PUSHES" <<'PY'
import statistics, sys, os
work = sys.argv[1]
def med(name):
    rows = [l.split() for l in open(os.path.join(work, name + ".txt")) if l.strip()]
    return statistics.median(float(r[0]) for r in rows), statistics.median(int(r[1]) for r in rows) / 1024
names = ["ours_gzip", "pg_basebackup_gz", "pgbackrest_gz", "ours_zstd", "ours_zstd_age", "pgbackrest_zst", "ours_restore", "ours_restore_age", "pgbackrest_restore", "wal_push", "wal_push_age"]
m = {n: med(n) for n in names}
print(f"{'tool':24} {'median s':>9} {'peak MiB':>9}")
for n in names:
    print(f"{n:24} {m[n][0]:9.2f} {m[n][1]:9.1f}")
def ratio(a, b, goal):
    r = m[b][0] / m[a][0]
    print(f"speedup {a} vs {b}: {r:.2f}x (goal {goal})")
ratio("ours_gzip", "pg_basebackup_gz", ">= 1.8x")
ratio("ours_gzip", "pgbackrest_gz", ">= 1.0x")
ratio("ours_zstd", "pgbackrest_zst", ">= 1.0x")
ratio("ours_restore", "pgbackrest_restore", ">= 1.0x")
def cost(enc, plain, goal):
    r = m[enc][0] / m[plain][0]
    print(f"encryption cost {enc} vs {plain}: {r:.2f}x wall time (goal {goal})")
cost("ours_zstd_age", "ours_zstd", "<= 1.10x")
cost("ours_restore_age", "ours_restore", "<= 1.10x")
pushes = int(sys.argv[2])
plain_ms, age_ms = (m[n][0] / pushes * 1000 for n in ("wal_push", "wal_push_age"))
print(f"WAL push (16 MiB segment, one process each, {pushes} pushes): {plain_ms:.0f} ms plain, {age_ms:.0f} ms encrypted: {age_ms / plain_ms:.2f}x (goal: nothing measurable, <= 1.10x)")
print(f"peak memory pg-base-backup: {max(m['ours_gzip'][1], m['ours_zstd'][1], m['ours_zstd_age'][1]):.1f} MiB (goal < 100 MiB)")
PY
