#!/usr/bin/env bash
# Benchmark of physical backup and restore, side by side in one run, on one pgbench database
# (scale 100 by default, about 1.5 GB): pg-base-backup vs `pg_basebackup -Ft -z` vs pgBackRest
# (process-max 2, gz and zst), and restore by pitr-restore vs `pgbackrest restore`; and the
# cost of encryption at rest (zstd + age vs zstd: backup, restore, and wal-archive push of
# real WAL segments); then incremental backups (`--pgdata`): a full read from the data
# directory vs pgBackRest full (zst, process-max 2), 1 % of pgbench_accounts' pages changed,
# incr vs pgBackRest incr (time and bytes), and a delta restore of the incr into the restored
# full vs a full restore and vs `pgbackrest restore --delta` (by checksum), and
# `--delta --delta-by-timestamp` vs `pgbackrest restore --delta --force` (by size and time).
# Prints the median wall time and peak memory of each, and the ratios the goals are stated in.
#
#   scripts/bench-physical.sh [SCALE] [RUNS]      defaults: 100 3
#   BENCH_PARTS=incr scripts/bench-physical.sh    only the incremental part (default: full,incr)
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

PARTS=${BENCH_PARTS:-full,incr}
for run in $(seq 1 "$RUNS"); do
    case ",$PARTS," in *,full,*) ;; *) break ;; esac
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

# Incremental part: the server archives into our repository (--pgdata keeps WAL there) and
# pgBackRest reads the same cluster. Each run: full backups, full restores (ours timed), 1 %
# of the accounts' pages updated, incr backups, delta restores of the incr into the restored
# fulls.
case ",$PARTS," in *,incr,*)
    as_db mkdir -p "$WORK/repo-inc/wal"
    cat >>"$WORK/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$BIN/wal-archive push %p --backup-dir $WORK/repo-inc -q'
CONF
    as_db "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w restart >/dev/null
    ACCOUNT_PAGES=$(as_db "$PG_BIN/psql" -XAtc "SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'")
    # rows per page ~ 61: updating aid 1..(pages/100 * 61) touches 1 % of the pages (their new
    # versions land at the table's end: another 1 %).
    CHANGE_ROWS=$((ACCOUNT_PAGES * 61 / 100))
    for run in $(seq 1 "$RUNS"); do
        echo "bench: incremental run $run/$RUNS ($CHANGE_ROWS rows of $ACCOUNT_PAGES pages)" >&2
        as_db rm -rf "$WORK/repo-inc/base" "$WORK/ri" "$WORK/rt" "$WORK/rp" "$WORK/rpf" "$WORK/ri-full"
        measure ours_pgdata_full "$BIN/pg-base-backup" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/data" --type full --compress zstd --no-retention -q
        measure pgbackrest_zst_full pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=full --compress-type=zst backup
        measure ours_pgdata_restore "$BIN/pitr-restore" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/ri" --target immediate --yes -q
        as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/rp" restore >/dev/null
        # Second copies for the by-timestamp deltas.
        as_db "$BIN/pitr-restore" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/rt" --target immediate --yes -q >/dev/null
        as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/rpf" restore >/dev/null
        as_db "$PG_BIN/psql" -XAtqc "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $CHANGE_ROWS; CHECKPOINT" >/dev/null
        measure ours_incr "$BIN/pg-base-backup" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/data" --type incr --compress zstd --no-retention -q
        # The floor: an incr with nothing changed since (the checkpoint, the WAL switch and
        # its archiving, the connection: what every backup pays, whatever it reads).
        measure ours_incr_idle "$BIN/pg-base-backup" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/data" --type incr --compress zstd --no-retention -q
        measure pgbackrest_incr pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=incr --compress-type=zst backup
        measure ours_delta "$BIN/pitr-restore" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/ri" --delta --target immediate --yes -q
        measure pgbackrest_delta pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/rp" --delta restore
        measure ours_delta_ts "$BIN/pitr-restore" --backup-dir "$WORK/repo-inc" --pgdata "$WORK/rt" --delta --delta-by-timestamp --target immediate --yes -q
        measure pgbackrest_delta_ts pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --pg1-path="$WORK/rpf" --delta --force restore
        # Stored bytes of the last full and incr of each tool.
        python3 - "$WORK" >>"$WORK/bytes.txt" <<'PY'
import json, os, sys
work = sys.argv[1]
base = os.path.join(work, "repo-inc", "base")
sets = sorted(os.listdir(base))
def stored(set_id):
    m = json.load(open(os.path.join(base, set_id, "manifest.json")))
    return sum(f["size"] for f in m["files"])
# The run's full, its incr, then the idle incr.
print("ours", stored(sets[-3]), stored(sets[-2]))
PY
        as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench info --output=json \
            | python3 -c 'import json,sys; b=json.load(sys.stdin)[0]["backup"]; print("pgbackrest", b[-2]["info"]["repository"]["delta"], b[-1]["info"]["repository"]["delta"])' >>"$WORK/bytes.txt"
        as_db pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench expire --repo1-retention-full=1 >/dev/null 2>&1 || true
    done
    ;;
esac

python3 - "$WORK" "$WAL_PUSHES" <<'PY'
import statistics, sys, os
work = sys.argv[1]
def med(name):
    rows = [l.split() for l in open(os.path.join(work, name + ".txt")) if l.strip()]
    return statistics.median(float(r[0]) for r in rows), statistics.median(int(r[1]) for r in rows) / 1024
names = ["ours_gzip", "pg_basebackup_gz", "pgbackrest_gz", "ours_zstd", "ours_zstd_age", "pgbackrest_zst", "ours_restore", "ours_restore_age", "pgbackrest_restore", "wal_push", "wal_push_age",
         "ours_pgdata_full", "pgbackrest_zst_full", "ours_pgdata_restore", "ours_incr", "ours_incr_idle", "pgbackrest_incr", "ours_delta", "pgbackrest_delta", "ours_delta_ts", "pgbackrest_delta_ts"]
names = [n for n in names if os.path.exists(os.path.join(work, n + ".txt"))]
m = {n: med(n) for n in names}
print(f"{'tool':24} {'median s':>9} {'peak MiB':>9}")
for n in names:
    print(f"{n:24} {m[n][0]:9.2f} {m[n][1]:9.1f}")
def ratio(a, b, goal):
    r = m[b][0] / m[a][0]
    print(f"speedup {a} vs {b}: {r:.2f}x (goal {goal})")
def incremental():
    if "ours_incr" not in m:
        return
    ratio("ours_pgdata_full", "pgbackrest_zst_full", ">= 1.0x (--pgdata full vs pgBackRest full, zst, 2 processes)")
    ratio("ours_incr", "pgbackrest_incr", ">= 1.0x")
    ratio("ours_delta", "pgbackrest_delta", ">= 1.0x")
    ratio("ours_delta_ts", "pgbackrest_delta_ts", ">= 1.0x (--delta-by-timestamp vs pgbackrest --delta --force)")
    share = lambda a, b, goal, what: print(f"{what} {a} / {b}: {m[a][0] / m[b][0]:.1%} of the time (goal {goal})")
    share("ours_incr", "ours_pgdata_full", "<= 10%", "incr time")
    share("ours_incr_idle", "ours_pgdata_full", "none: the floor of any backup", "incr time with nothing changed")
    share("ours_delta", "ours_pgdata_restore", "<= 25%", "delta restore time (by checksum)")
    share("ours_delta_ts", "ours_pgdata_restore", "<= 25%", "delta restore time (by timestamp)")
    rows = [l.split() for l in open(os.path.join(work, "bytes.txt")) if l.strip()]
    for tool in ("ours", "pgbackrest"):
        full = statistics.median(int(r[1]) for r in rows if r[0] == tool)
        incr = statistics.median(int(r[2]) for r in rows if r[0] == tool)
        print(f"incr bytes {tool}: {incr / 1048576:.1f} MiB of a {full / 1048576:.1f} MiB full: {incr / full:.1%}" + (" (goal <= 10%)" if tool == "ours" else ""))
if "ours_gzip" not in m:
    incremental()
    sys.exit(0)
ratio("ours_gzip", "pg_basebackup_gz", ">= 1.8x")
ratio("ours_gzip", "pgbackrest_gz", ">= 1.0x")
ratio("ours_zstd", "pgbackrest_zst", ">= 1.0x")
ratio("ours_restore", "pgbackrest_restore", ">= 1.0x")
incremental()
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
