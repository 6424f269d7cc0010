#!/usr/bin/env bash
# Benchmark of the S3 repository, side by side in one run, on one pgbench database
# (scale 100 by default, about 1.5 GB) and the S3-compatible test server (SeaweedFS):
#
#   1. pg-base-backup --compress zstd --wal-method fetch to S3 vs to a local directory
#      (goal: S3 <= 1.3x the local time), and vs what a user would otherwise script,
#      `pg_basebackup -D - -Ft -X fetch -c fast | zstd | aws s3 cp - s3://...` (goal: ours
#      <= 0.8x its time)
#   2. pitr-restore --target immediate from S3 vs from local (goal: <= 1.3x)
#   3. peak RSS of each of ours (goal: <= 100 MiB, plus the part buffers when on S3:
#      (BACKUP_S3_UPLOAD_CONCURRENCY + 1) x BACKUP_S3_PART_SIZE, 192 MiB by default)
#   4. WAL: `wal-archive push` latency per real 16 MiB segment, one after another, to S3 vs to a
#      local directory; then PostgreSQL archiving into S3 through archive_command (AWS_* from a
#      0600 --config file, not the server's environment) under `pgbench -c 2`, sampling
#      pg_stat_archiver and the .ready files every 5 s (goal: no growing backlog)
#
#   scripts/bench-s3.sh [SCALE] [RUNS]      defaults: 100 3
#   env: WAL_SEGMENTS (30), ARCHIVE_SECONDS (60), SAMPLE_SECONDS (5)
#
# The S3 server: PIPELINE_BACKUP_TEST_S3_* when set, else the one scripts/services.sh runs
# (started here, and stopped at the end, when it does not run). Every object goes under one
# fresh prefix, bench-s3-<time>-<pid>/, removed at the end. The aws CLI is installed from PyPI
# into .cache/bench-venv when missing; if `aws s3 cp -` does not work against the server,
# scripts/lib/s3req.py PUT fed from the pipe stands in for it (the output says so). Needs root
# or the postgres user; installs GNU time and zstd if missing. Noisy machines: compare the
# ratios of one run (each run alternates the order of the tools), not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${1:-100}
RUNS=${2:-3}
WAL_SEGMENTS=${WAL_SEGMENTS:-30}
ARCHIVE_SECONDS=${ARCHIVE_SECONDS:-60}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-5}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

need=()
[ -x /usr/bin/time ] || need+=(time)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-deps.sh
BENCH_VENV=$ROOT/.cache/bench-venv
if [ ! -x "$BENCH_VENV/bin/aws" ]; then
    echo "bench: installing awscli into $BENCH_VENV" >&2
    python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/pip" install -q awscli >&2
fi
AWS=$BENCH_VENV/bin/aws
cargo build --release -q -p pg-base-backup -p wal-archive -p pitr-restore
BIN=$ROOT/${CARGO_TARGET_DIR:-target}/release

# The S3 server.
STARTED_SERVICES=0
if [ -z "${PIPELINE_BACKUP_TEST_S3_ENDPOINT:-}" ]; then
    if services_env=$(scripts/services.sh env 2>/dev/null); then
        eval "$services_env"
    else
        STARTED_SERVICES=1
        eval "$(scripts/services.sh start)"
    fi
fi
BUCKET=$PIPELINE_BACKUP_TEST_S3_BUCKET
ENDPOINT=$PIPELINE_BACKUP_TEST_S3_ENDPOINT
export AWS_ACCESS_KEY_ID=$PIPELINE_BACKUP_TEST_S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$PIPELINE_BACKUP_TEST_S3_SECRET_KEY
export AWS_ENDPOINT_URL=$ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
export BACKUP_NO_PROGRESS=1
PREFIX=bench-s3-$(date -u +%Y%m%dT%H%M%SZ)-$$
S3ROOT=s3://$BUCKET/$PREFIX

WORK=$(mktemp -d /tmp/bench-s3.XXXXXX)
chmod 755 "$WORK"
as_db() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env HOME="$WORK" "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
# The same as a command prefix, for measure (which runs a command, not a function), and inside
# a `bash -c` command line (pg_basebackup in the user's script).
DB=()
DB_RUN=
if [ "$(id -u)" = 0 ]; then
    DB=(runuser -u postgres -- env HOME="$WORK")
    DB_RUN="runuser -u postgres --"
fi

# s3_util list|bytes|uploads|delete PREFIX: the objects under a prefix of the bucket, their
# total size, the multipart uploads left open there, or removes both (through s3req.py).
s3_util() {
    python3 - "$1" "$2" "$BUCKET" "$ROOT/scripts/lib/s3req.py" <<'PY'
import subprocess, sys, urllib.parse, xml.etree.ElementTree as ET
what, prefix, bucket, s3req = sys.argv[1:]
def req(method, path, query=""):
    r = subprocess.run([sys.executable, s3req, method, path, query], stdin=subprocess.DEVNULL,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"bench: {method} {path}?{query}: {r.stderr.decode().strip()}")
    return r.stdout
def children(node, name):
    return [c for c in node if c.tag.rsplit("}", 1)[-1] == name]
def text(node, name):
    found = children(node, name)
    return found[0].text or "" if found else ""
q = urllib.parse.quote
objects, token = [], None
while True:
    query = "list-type=2&prefix=" + q(prefix, safe="")
    if token:
        query += "&continuation-token=" + q(token, safe="")
    root = ET.fromstring(req("GET", "/" + bucket, query))
    objects += [(text(c, "Key"), int(text(c, "Size") or 0)) for c in children(root, "Contents")]
    if text(root, "IsTruncated") != "true":
        break
    token = text(root, "NextContinuationToken")
uploads = []
try:
    root = ET.fromstring(req("GET", "/" + bucket, "uploads=&prefix=" + q(prefix, safe="")))
    uploads = [(text(u, "Key"), text(u, "UploadId")) for u in children(root, "Upload")]
except SystemExit as e:
    if what == "uploads":
        raise
if what == "list":
    for key, size in objects:
        print(size, key)
elif what == "bytes":
    print(sum(size for _, size in objects))
elif what == "uploads":
    print(len(uploads))
elif what == "delete":
    for key, upload_id in uploads:
        req("DELETE", "/" + bucket + "/" + key, "uploadId=" + q(upload_id, safe=""))
    for key, _ in objects:
        req("DELETE", "/" + bucket + "/" + key)
    # SeaweedFS keeps the emptied folders (listed as common prefixes): deepest first.
    folders, todo = [], [prefix]
    while todo:
        query = "delimiter=%2F&list-type=2&prefix=" + q(todo.pop(), safe="")
        found = [text(c, "Prefix") for c in children(ET.fromstring(req("GET", "/" + bucket, query)), "CommonPrefixes")]
        folders += found
        todo += found
    for folder in sorted(set(folders) | {prefix}, key=lambda f: -f.count("/")):
        if folder.endswith("/"):
            req("DELETE", "/" + bucket + "/" + folder)
PY
}

PGBENCH_PID=
cleanup() {
    set +e
    [ -n "$PGBENCH_PID" ] && kill "$PGBENCH_PID" 2>/dev/null && wait "$PGBENCH_PID" 2>/dev/null
    as_db "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1
    s3_util delete "$PREFIX/" >/dev/null 2>&1 || echo "bench: could not remove $S3ROOT/" >&2
    rm -rf "$WORK"
    if [ "$STARTED_SERVICES" = 1 ]; then scripts/services.sh stop; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The user's script: `aws s3 cp -` when it works against this server, else s3req.py PUT from
# the pipe (it reads the whole body into memory first: a stand-in, not a streaming upload).
head -c $((20 << 20)) /dev/urandom >"$WORK/probe.bin"
if "$AWS" --endpoint-url "$ENDPOINT" --region us-east-1 s3 cp - "$S3ROOT/probe/probe.bin" \
    --only-show-errors <"$WORK/probe.bin" >"$WORK/aws-probe.log" 2>&1 &&
    [ "$(s3_util bytes "$PREFIX/probe/")" = $((20 << 20)) ]; then
    UPLOADER=aws
    upload_cmd() { printf '%q --endpoint-url %q --region us-east-1 s3 cp - %q --only-show-errors' "$AWS" "$ENDPOINT" "s3://$BUCKET/$1"; }
else
    UPLOADER=s3req
    echo "bench: aws s3 cp - does not work against $ENDPOINT, s3req.py PUT stands in:" >&2
    cat "$WORK/aws-probe.log" >&2
    upload_cmd() { printf 'python3 %q PUT %q' "$ROOT/scripts/lib/s3req.py" "/$BUCKET/$1"; }
fi
rm -f "$WORK/probe.bin"
s3_util delete "$PREFIX/probe/"

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
# The server gets no AWS_* variables: its archive_command reads them from a --config file.
pg_start() {
    as_db env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_ENDPOINT_URL -u AWS_ALLOW_HTTP \
        -u AWS_REGION "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
}
pg_start
sql() { as_db "$PG_BIN/psql" -XAtqc "$1"; }
echo "bench: pgbench -i -s $SCALE" >&2
as_db "$PG_BIN/pgbench" -i -s "$SCALE" -q >/dev/null 2>&1
SIZE=$(sql "SELECT pg_size_pretty(pg_database_size('postgres'))")
echo "bench: database size $SIZE, $RUNS runs each, S3 server $ENDPOINT, uploader of the script: $UPLOADER" >&2

unset BROKER_PID # measure.sh's quiesce: no broker here, a pause of one second
source scripts/lib/measure.sh

# 1-3: base backups and restores.
backup_local() { measure ours_local "${DB[@]}" "$BIN/pg-base-backup" --backup-dir "$WORK/repo-$1" --compress zstd --wal-method fetch --no-retention -q >/dev/null; }
backup_s3() { measure ours_s3 "${DB[@]}" "$BIN/pg-base-backup" --backup-dir "$S3ROOT/base-$1" --compress zstd --wal-method fetch --no-retention -q >/dev/null; }
backup_script() {
    measure script_s3 bash -o pipefail -c "$DB_RUN $PG_BIN/pg_basebackup -D - -Ft -X fetch -c fast | zstd -q | $(upload_cmd "$PREFIX/script-$1/base.tar.zst")" >/dev/null
}
restore_local() { measure restore_local "${DB[@]}" "$BIN/pitr-restore" --backup-dir "$WORK/repo-$1" --pgdata "$WORK/restore-local" --target immediate --yes -q >/dev/null; }
restore_s3() { measure restore_s3 "${DB[@]}" "$BIN/pitr-restore" --backup-dir "$S3ROOT/base-$1" --pgdata "$WORK/restore-s3" --target immediate --yes -q >/dev/null; }

for run in $(seq 1 "$RUNS"); do
    echo "bench: run $run/$RUNS" >&2
    if [ $((run % 2)) = 1 ]; then
        backup_local "$run"; backup_s3 "$run"; backup_script "$run"
    else
        backup_script "$run"; backup_s3 "$run"; backup_local "$run"
    fi
    if [ -d "$WORK/repo-$run" ]; then du -sb "$WORK/repo-$run" | cut -f1 >>"$WORK/size_local"; fi
    s3_util bytes "$PREFIX/base-$run/" >>"$WORK/size_s3"
    s3_util bytes "$PREFIX/script-$run/" >>"$WORK/size_script"
    s3_util uploads "$PREFIX/" >>"$WORK/open_uploads" 2>/dev/null || echo "?" >>"$WORK/open_uploads"
    as_db rm -rf "$WORK/restore-local" "$WORK/restore-s3"
    if [ $((run % 2)) = 1 ]; then
        restore_local "$run"; restore_s3 "$run"
    else
        restore_s3 "$run"; restore_local "$run"
    fi
    as_db rm -rf "$WORK/restore-local" "$WORK/restore-s3" "$WORK/repo-$run"
    s3_util delete "$PREFIX/base-$run/"
    s3_util delete "$PREFIX/script-$run/"
done

# 4a. Real segments: archiving on into a directory (cp), bulk updates until enough full
# segments are there; the first two (partly written before archiving was on, or by a switch)
# are left out.
echo "bench: making $WAL_SEGMENTS WAL segments" >&2
as_db mkdir -p "$WORK/walsrc" "$WORK/walpush-local"
cat >>"$WORK/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = 'test ! -f $WORK/walsrc/%f && cp %p $WORK/walsrc/%f'
CONF
as_db "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null
pg_start
ACCOUNTS=$((SCALE * 100000))
lo=1
for _ in $(seq 1 300); do
    [ "$(find "$WORK/walsrc" -type f | wc -l)" -ge $((WAL_SEGMENTS + 2)) ] && break
    sql "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $lo AND $((lo + 99999))"
    lo=$(((lo + 100000) % ACCOUNTS))
    sleep 0.2
done
mapfile -t SEGMENTS < <(find "$WORK/walsrc" -type f -name '[0-9A-F]*' | sort | tail -n +3 | head -n "$WAL_SEGMENTS")
[ ${#SEGMENTS[@]} = "$WAL_SEGMENTS" ] || { echo "bench: made only ${#SEGMENTS[@]} segments" >&2; exit 2; }

# Pushes each segment to both, alternating which goes first; one line "microseconds peak_kib"
# (or "failed") per push in $WORK/push.local and $WORK/push.s3.
echo "bench: wal-archive push of $WAL_SEGMENTS segments, local and S3" >&2
sync
# shellcheck disable=SC2016
as_db bash -c '
    bin=$1 work=$2 s3=$3; shift 3
    i=0
    for f in "$@"; do
        i=$((i + 1))
        if [ $((i % 2)) = 1 ]; then order="local s3"; else order="s3 local"; fi
        for d in $order; do
            if [ "$d" = local ]; then dir=$work/walpush-local; else dir=$s3; fi
            start=$(date +%s%N)
            if /usr/bin/time -f %M -o "$work/push.rss" "$bin/wal-archive" -q push "$f" --backup-dir "$dir"; then
                end=$(date +%s%N)
                echo "$(((end - start) / 1000)) $(tail -n 1 "$work/push.rss")" >>"$work/push.$d"
            else
                echo "bench: wal-archive push $f to $dir failed" >&2
                echo failed >>"$work/push.$d"
            fi
        done
    done' _ "$BIN" "$WORK" "$S3ROOT/walpush" "${SEGMENTS[@]}"

# 4b. PostgreSQL archiving into S3 under pgbench load.
echo "bench: archiving into S3 under pgbench -c 2 -T $ARCHIVE_SECONDS" >&2
for _ in $(seq 1 120); do
    [ "$(find "$WORK/data/pg_wal/archive_status" -name '*.ready' | wc -l)" = 0 ] && break
    sleep 0.5
done
(
    umask 077
    cat >"$WORK/archive.env" <<CONF
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_ALLOW_HTTP=true
AWS_REGION=$AWS_REGION
CONF
)
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/archive.env"
sql "ALTER SYSTEM SET archive_command = '$BIN/wal-archive push %p --backup-dir $S3ROOT/archive --config $WORK/archive.env -q'"
# Checkpoints every 30 s during the load (and one right before it): full-page images keep the
# WAL rate up, as on a busy server, rather than a few MiB of small records a minute.
sql "ALTER SYSTEM SET checkpoint_timeout = '30s'"
sql "SELECT pg_reload_conf()" >/dev/null
sleep 1
sql "CHECKPOINT"
sample() { # "seconds ready archived failed wal_bytes"
    local t=$1 ready
    ready=$(find "$WORK/data/pg_wal/archive_status" -name '*.ready' | wc -l)
    echo "$t $ready $(sql "SELECT archived_count, failed_count, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint FROM pg_stat_archiver" | tr '|' ' ')"
}
sample 0 >"$WORK/archiver.load"
START=$(date +%s)
as_db "$PG_BIN/pgbench" -n -c 2 -j 2 -T "$ARCHIVE_SECONDS" >"$WORK/pgbench.out" 2>&1 &
PGBENCH_PID=$!
while kill -0 "$PGBENCH_PID" 2>/dev/null; do
    sleep "$SAMPLE_SECONDS"
    kill -0 "$PGBENCH_PID" 2>/dev/null && sample $(($(date +%s) - START)) >>"$WORK/archiver.load"
done
wait "$PGBENCH_PID" || { echo "bench: pgbench failed:" >&2; cat "$WORK/pgbench.out" >&2; }
PGBENCH_PID=
sample $(($(date +%s) - START)) >>"$WORK/archiver.load"
# Then until the backlog is gone (at most 120 s).
: >"$WORK/archiver.drain"
last_ready=$(tail -n 1 "$WORK/archiver.load" | cut -d' ' -f2)
for _ in $(seq 1 $((120 / SAMPLE_SECONDS))); do
    [ "$last_ready" = 0 ] && break
    sleep "$SAMPLE_SECONDS"
    sample $(($(date +%s) - START)) >>"$WORK/archiver.drain"
    last_ready=$(tail -n 1 "$WORK/archiver.drain" | cut -d' ' -f2)
done
TPS=$(sed -n 's/^tps = \([0-9]*\).*/\1/p' "$WORK/pgbench.out" | head -n 1)
ARCHIVE_OBJECTS=$(s3_util list "$PREFIX/archive/" | wc -l)
grep -E 'archive command failed|^wal-archive: ' "$WORK/server.log" | head -n 5 >"$WORK/archive.errors" || true

# The report.
mib() { awk -v k="$1" 'BEGIN { if (k == "failed" || k == "") print "-"; else printf "%.1f", k / 1048576 }'; }
med_file() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$(median "$1" 1)" -v b="$(median "$2" 1)" 'BEGIN { if (a == "failed" || b == "failed" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
atmost() { awk -v r="$1" -v goal="$2" 'BEGIN { if (r == "n/a" || r == "-") print "n/a"; else print (r <= goal ? "PASS" : "MISS") }'; }
mem_limit_s3=$(awk -v p="${BACKUP_S3_PART_SIZE:-67108864}" -v c="${BACKUP_S3_UPLOAD_CONCURRENCY:-2}" 'BEGIN { printf "%.0f", 100 + (c + 1) * p / 1048576 }')
[[ ${BACKUP_S3_PART_SIZE:-67108864} =~ ^[0-9]+$ ]] || mem_limit_s3="100 + part buffers"

printf '\npgbench scale %s (database %s), %s runs, medians; S3: %s; script uploader: %s\n\n' \
    "$SCALE" "$SIZE" "$RUNS" "$ENDPOINT" "$([ "$UPLOADER" = aws ] && echo "aws s3 cp - (awscli $("$AWS" --version 2>&1 | cut -d' ' -f1 | cut -d/ -f2))" || echo "s3req.py PUT from the pipe (STAND-IN: aws s3 cp - failed)")"
printf '%-46s %9s %9s %10s\n' "tool" "median s" "peak MiB" "size MiB"
printf '%-46s %9s %9s %10s\n' "pg-base-backup -> local dir" "$(median ours_local 1)" "$(peak ours_local)" "$(mib "$(med_file "$WORK/size_local")")"
printf '%-46s %9s %9s %10s\n' "pg-base-backup -> s3" "$(median ours_s3 1)" "$(peak ours_s3)" "$(mib "$(med_file "$WORK/size_s3")")"
printf '%-46s %9s %9s %10s\n' "pg_basebackup -Ft -X fetch | zstd | $UPLOADER" "$(median script_s3 1)" "$(peak script_s3)" "$(mib "$(med_file "$WORK/size_script")")"
printf '%-46s %9s %9s\n' "pitr-restore --target immediate <- local dir" "$(median restore_local 1)" "$(peak restore_local)"
printf '%-46s %9s %9s\n' "pitr-restore --target immediate <- s3" "$(median restore_s3 1)" "$(peak restore_s3)"

r1=$(ratio ours_s3 ours_local); r2=$(ratio ours_s3 script_s3); r3=$(ratio restore_s3 restore_local)
printf '\nbackup  s3 vs local:            %sx (goal <= 1.3x: %s), per run %sx\n' "$r1" "$(atmost "$r1" 1.3)" "$(paired ours_local ours_s3)"
printf 'backup  s3 vs script to s3:     %sx (goal <= 0.8x: %s), per run %sx\n' "$r2" "$(atmost "$r2" 0.8)" "$(paired script_s3 ours_s3)"
printf 'restore s3 vs local:            %sx (goal <= 1.3x: %s), per run %sx\n' "$r3" "$(atmost "$r3" 1.3)" "$(paired restore_local restore_s3)"
printf 'open multipart uploads left after each run: %s\n' "$(paste -sd' ' "$WORK/open_uploads")"

push_stats() { # FILE -> "median_ms p95_ms max_peak_kib failures"
    python3 - "$1" <<'PY'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rows if r[0] != "failed"]
ms = sorted(int(r[0]) / 1000 for r in ok)
if not ms:
    print("- - - %d" % len(rows)); sys.exit()
p95 = ms[max(0, math.ceil(0.95 * len(ms)) - 1)]
print(f"{statistics.median(ms):.0f} {p95:.0f} {max(int(r[1]) for r in ok)} {len(rows) - len(ok)}")
PY
}
read -r pl_med pl_p95 pl_kib pl_fail <<<"$(push_stats "$WORK/push.local")"
read -r ps_med ps_p95 ps_kib ps_fail <<<"$(push_stats "$WORK/push.s3")"
printf '\nwal-archive push, %s segments of 16 MiB one after another  median ms  p95 ms  peak MiB  failed\n' "$WAL_SEGMENTS"
printf '%-58s %9s %7s %9s %7s\n' "-> local dir" "$pl_med" "$pl_p95" "$(awk -v k="$pl_kib" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }')" "$pl_fail"
printf '%-58s %9s %7s %9s %7s\n' "-> s3" "$ps_med" "$ps_p95" "$(awk -v k="$ps_kib" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }')" "$ps_fail"
printf 'push s3 vs local: %sx median, %sx p95\n' \
    "$(awk -v a="$ps_med" -v b="$pl_med" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }')" \
    "$(awk -v a="$ps_p95" -v b="$pl_p95" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }')"

printf '\npeak RSS (GNU time %%M, largest of the runs)   peak MiB  limit MiB  verdict\n'
peak_max() { grep -v failed "$WORK/$1" | cut -d' ' -f2 | sort -n | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }'; }
mem_row() { # LABEL MiB LIMIT
    local v
    v=$([ -n "$2" ] && awk -v m="$2" -v l="$3" 'BEGIN { if (l !~ /^[0-9.]+$/) print "n/a"; else print (m <= l ? "PASS" : "MISS") }' || echo n/a)
    printf '%-46s %9s %10s  %s\n' "$1" "${2:--}" "$3" "$v"
}
mem_row "pg-base-backup -> local dir" "$(peak_max ours_local)" 100
mem_row "pg-base-backup -> s3" "$(peak_max ours_s3)" "$mem_limit_s3"
mem_row "pitr-restore <- local dir" "$(peak_max restore_local)" 100
mem_row "pitr-restore <- s3" "$(peak_max restore_s3)" "$mem_limit_s3"
mem_row "wal-archive push -> local dir" "$(awk -v k="$pl_kib" 'BEGIN { if (k != "-") printf "%.1f", k / 1024 }')" 100
mem_row "wal-archive push -> s3" "$(awk -v k="$ps_kib" 'BEGIN { if (k != "-") printf "%.1f", k / 1024 }')" "$mem_limit_s3"
printf '(s3 limit: 100 MiB + (BACKUP_S3_UPLOAD_CONCURRENCY + 1) x BACKUP_S3_PART_SIZE part buffers = %s MiB; local: 100 MiB)\n' "$mem_limit_s3"

printf '\narchive_command = wal-archive push %%p --backup-dir s3://... --config FILE, under pgbench -n -c 2 -j 2 -T %s (%s tps), checkpoint_timeout 30s\n' "$ARCHIVE_SECONDS" "${TPS:-?}"
printf '%6s %6s %9s %7s %9s\n' "t s" ".ready" archived failed "WAL MiB"
base_arch=$(head -n 1 "$WORK/archiver.load" | cut -d' ' -f3)
base_fail=$(head -n 1 "$WORK/archiver.load" | cut -d' ' -f4)
base_wal=$(head -n 1 "$WORK/archiver.load" | cut -d' ' -f5)
awk -v a="$base_arch" -v f="$base_fail" -v w="$base_wal" '{ printf "%6s %6s %9s %7s %9.0f%s\n", $1, $2, $3 - a, $4 - f, ($5 - w) / 1048576, FILENAME ~ /drain/ ? "  (after the load)" : "" }' \
    "$WORK/archiver.load" "$WORK/archiver.drain"
python3 - "$WORK/archiver.load" "$WORK/archiver.drain" "$ARCHIVE_OBJECTS" <<'PY'
import sys
load = [list(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
drain = [list(map(int, l.split())) for l in open(sys.argv[2]) if l.strip()]
ready = [r[1] for r in load]
half = ready[: max(1, len(ready) // 2)]
end = ready[-1]
growing = end > max(2, max(half))
wal_mib = (load[-1][4] - load[0][4]) / 1048576
secs = max(1, load[-1][0] - load[0][0])
failed = (drain or load)[-1][3] - load[0][3]
drained = [r for r in drain if r[1] == 0]
after = "drained at once" if not drain else (
    f"drained {drained[0][0] - load[-1][0]} s after the load" if drained else
    f"NOT drained {drain[-1][0] - load[-1][0]} s after the load ({drain[-1][1]} .ready)")
print(f"WAL {wal_mib:.0f} MiB in {secs} s ({wal_mib / secs * 60 / 16:.1f} segments/min); "
      f"{sys.argv[3]} objects archived in S3; archive_command failures: {failed}")
print(f"max backlog {max(ready)} .ready (first half max {max(half)}, at the end of the load {end}); {after}")
print(f"no growing backlog (goal): {'MISS' if growing else 'PASS'}"
      + (f" (but {failed} archive_command failures)" if failed else ""))
PY
if [ -s "$WORK/archive.errors" ]; then
    echo "server log (first lines about archiving):"
    cat "$WORK/archive.errors"
fi
