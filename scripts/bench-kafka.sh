#!/usr/bin/env bash
# Benchmark of kafka-topic-backup and kafka-replay (issue 5) against kcat and a bare rdkafka
# consumer that discards what it reads (the broker's limit), in one run.
#
#   scripts/bench-kafka.sh                  one million ~200-byte records, keys and two
#                                           headers each, over 3 partitions
#   RECORDS=200000 scripts/bench-kafka.sh   a smaller run
#
# The broker: KAFKA_BOOTSTRAP_SERVERS, else PIPELINE_BACKUP_TEST_KAFKA, else the one
# scripts/services.sh started. Needs kcat (apt-get install kcat) and /usr/bin/time.
# Goals: export >= kcat and >= 0.9x the bare consumer; replay >= kcat; peak memory < 100 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER=${KAFKA_BOOTSTRAP_SERVERS:-${PIPELINE_BACKUP_TEST_KAFKA:-$(cat .cache/services/kafka.addr 2>/dev/null || true)}}
RECORDS=${RECORDS:-1000000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[ -n "$BROKER" ] || { echo "bench: no broker (set KAFKA_BOOTSTRAP_SERVERS or run scripts/services.sh start)" >&2; exit 2; }
command -v kcat >/dev/null || { echo "bench: kcat is missing (apt-get install kcat)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }

cargo build --quiet --release -p kafka-topic-backup -p kafka-replay --bins --examples
BIN=$TARGET_DIR/release
WORK=$(mktemp -d)
# The test broker (noida-db) ignores the fetch size limits and answers a fetch with whole
# partitions, which librdkafka refuses above receive.message.max.bytes (100 MB): raise it for
# every client (kcat, the bare consumer and the tools alike). Real Kafka needs none of this.
CLIENT_X=${BENCH_CLIENT_CONFIG:-receive.message.max.bytes=1000000000}
export KAFKA_CLIENT_CONFIG=$CLIENT_X
KCAT_X=()
for item in ${CLIENT_X//;/ }; do KCAT_X+=(-X "$item"); done
export KAFKA_BOOTSTRAP_SERVERS=$BROKER BACKUP_NO_PROGRESS=1
RUN=bench_$$_$(date +%s)
SRC=${RUN}_src
cleanup() {
    "$BIN/examples/kafka_bench" delete "$SRC" "${RUN}_kcat" "${RUN}_ours" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench: producing $RECORDS records into $SRC on $BROKER ..." >&2
"$BIN/examples/kafka_bench" create "$SRC" 3
awk -v n="$RECORDS" 'BEGIN {
    pad = sprintf("%0160d", 0)
    for (i = 0; i < n; i++) printf "user-%06d\tevent-%09d-%s\n", i % 50000, i, pad
}' | kcat -P -b "$BROKER" -t "$SRC" -K $'\t' -H trace=0af7651916cd43dd8448eb211c80319c -H source=bench

# measure NAME COMMAND...: wall seconds and peak RSS (KiB) into $WORK/NAME.
# A failed command is reported as such, and the run goes on.
measure() {
    local name=$1
    shift
    if ! /usr/bin/time -f '%e %M' -o "$WORK/$name" "$@"; then
        echo "bench: $name failed" >&2
        echo "failed failed" >"$WORK/$name"
    fi
}

echo "bench: export ..." >&2
measure bare "$BIN/examples/kafka_bench" consume "$SRC" >/dev/null
measure kcat_export bash -c "kcat -C -b '$BROKER' ${KCAT_X[*]} -t '$SRC' -o beginning -e -q -f '%k\t%s\n' > '$WORK/kcat.out'"
measure ours_export "$BIN/kafka-topic-backup" -q --topic "$SRC" --backup-dir "$WORK/repo" --no-retention >/dev/null

echo "bench: replay ..." >&2
"$BIN/examples/kafka_bench" create "${RUN}_kcat" 3
measure kcat_replay kcat -P -b "$BROKER" "${KCAT_X[@]}" -t "${RUN}_kcat" -K $'\t' -l "$WORK/kcat.out"
measure ours_replay "$BIN/kafka-replay" -q --topic "$SRC" --target-topic "${RUN}_ours" --backup-dir "$WORK/repo" >/dev/null

rate() { awk -v n="$RECORDS" -v s="$(cut -d' ' -f1 "$WORK/$1")" 'BEGIN { if (s == "failed") print "failed"; else printf "%.0f", n / (s > 0 ? s : 0.001) }'; }
peak() { awk -v k="$(cut -d' ' -f2 "$WORK/$1")" 'BEGIN { if (k == "failed") print "-"; else printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$(rate "$1")" -v b="$(rate "$2")" 'BEGIN { if (a == "failed" || b == "failed") print "n/a"; else printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v goal="$2" 'BEGIN { if (r == "n/a") print "n/a"; else print (r >= goal ? "ok" : "MISSED") }'; }

printf '\n%d records, archive %s bytes\n\n' "$RECORDS" "$(du -sb "$WORK/repo" | cut -f1)"
printf '%-8s %-26s %12s %10s\n' phase tool records/s "peak MB"
for row in "export bare-rdkafka-consumer bare" "export kcat-C kcat_export" \
    "export kafka-topic-backup ours_export" "replay kcat-P kcat_replay" \
    "replay kafka-replay ours_replay"; do
    set -- $row
    printf '%-8s %-26s %12s %10s\n' "$1" "$2" "$(rate "$3")" "$(peak "$3")"
done
e_kcat=$(ratio ours_export kcat_export)
e_bare=$(ratio ours_export bare)
r_kcat=$(ratio ours_replay kcat_replay)
mem_ok=$(awk -v a="$(peak ours_export)" -v b="$(peak ours_replay)" 'BEGIN { print (a < 100 && b < 100) ? "ok" : "MISSED" }')
printf '\nexport vs kcat:          %sx (goal >= 1.0: %s)\n' "$e_kcat" "$(verdict "$e_kcat" 1.0)"
printf 'export vs bare consumer: %sx (goal >= 0.9: %s)\n' "$e_bare" "$(verdict "$e_bare" 0.9)"
printf 'replay vs kcat:          %sx (goal >= 1.0: %s)\n' "$r_kcat" "$(verdict "$r_kcat" 1.0)"
printf 'peak memory < 100 MB:    %s\n' "$mem_ok"
