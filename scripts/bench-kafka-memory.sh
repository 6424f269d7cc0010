#!/usr/bin/env bash
# Export memory against topic size, on a broker that honours the fetch size limits (the
# goal: peak memory under 100 MB whatever the topic size).
#
#   scripts/bench-kafka-memory.sh                 1M, then 2M records of ~200 bytes over 3
#                                                 partitions; 3 runs each
#   RECORDS=200000 RUNS=1 scripts/bench-kafka-memory.sh
#
# The test broker (noida-db) answers every fetch with the rest of a partition, whatever
# fetch.max.bytes and max.partition.fetch.bytes say, so there any librdkafka reader holds whole
# partitions (scripts/bench-kafka.sh shows it). Real Kafka cuts a fetch response at those
# limits, and so does tansu, a Kafka-protocol broker published on crates.io: this script
# installs it (cargo install, about 10 minutes on 2 cores, kept in .cache/tansu), runs it on
# 127.0.0.1 with in-memory storage, and exports the same topic shape as bench-kafka.sh with
# kafka-topic-backup and with a bare rdkafka consumer that discards what it reads.
#
# kcat is not compared here: Debian's kcat (librdkafka 2.0.2) fails tansu's ApiVersions
# exchange. tansu 0.6.0 also acknowledges some produced records without storing them (seen with
# librdkafka and kafka-python producers alike; kafka-replay's verification reports it), so the
# loader prints how many records the broker holds and every reader reads exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-1000000}
RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
TANSU_VERSION=0.6.0
TANSU_ROOT=.cache/tansu
TANSU=$TANSU_ROOT/bin/tansu
[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
if ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "bench: installing tansu $TANSU_VERSION into $TANSU_ROOT (about 10 minutes) ..." >&2
    cargo install --quiet --locked tansu --version "$TANSU_VERSION" --features dynostore --root "$TANSU_ROOT"
fi
cargo build --quiet --release -p kafka-topic-backup --bins --examples
BIN=$TARGET_DIR/release

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=127.0.0.1:$PORT
"$TANSU" broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
    --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
cleanup() {
    kill "$TANSU_PID" 2>/dev/null || true
    wait "$TANSU_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
export KAFKA_BOOTSTRAP_SERVERS=$BROKER BACKUP_NO_PROGRESS=1
unset KAFKA_CLIENT_CONFIG

source scripts/lib/measure.sh

for factor in 1 2; do
    topic=memory_$factor
    records=$((RECORDS * factor))
    echo "bench: loading $records records into $topic on tansu $BROKER ..." >&2
    "$BIN/examples/kafka_bench" create "$topic" 3
    "$BIN/examples/kafka_bench" produce "$topic" "$records" >/dev/null
    for run in $(seq 1 "$RUNS"); do
        echo "bench: $records records, run $run of $RUNS ..." >&2
        measure "bare_$factor" "$BIN/examples/kafka_bench" consume "$topic" >"$WORK/bare_$factor.out"
        rm -rf "$WORK/repo"
        measure "ours_$factor" "$BIN/kafka-topic-backup" -q --topic "$topic" --backup-dir "$WORK/repo" \
            --no-retention --output json >"$WORK/ours_$factor.out"
    done
    held[$factor]=$(awk '{ print $2 }' "$WORK/bare_$factor.out")
    exported[$factor]=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["records"])' "$WORK/ours_$factor.out")
done

printf '\nexport from tansu %s (honours fetch size limits), 3 partitions, medians of %d runs\n\n' "$TANSU_VERSION" "$RUNS"
printf '%-26s %14s %10s %10s %10s\n' tool "records held" "median s" "peak MB" "CPU s"
for factor in 1 2; do
    printf '%-26s %14s %10s %10s %10s\n' bare-rdkafka-consumer "${held[$factor]}" \
        "$(median "bare_$factor" 1)" "$(peak "bare_$factor")" "$(median "bare_$factor" 3)"
    printf '%-26s %14s %10s %10s %10s\n' kafka-topic-backup "${exported[$factor]}" \
        "$(median "ours_$factor" 1)" "$(peak "ours_$factor")" "$(median "ours_$factor" 3)"
done
worst=$(awk -v a="$(peak ours_1)" -v b="$(peak ours_2)" 'BEGIN { print (a > b ? a : b) }')
growth=$(awk -v a="$(peak ours_1)" -v b="$(peak ours_2)" 'BEGIN { printf "%.2f", b / a }')
printf '\nkafka-topic-backup peak memory: %s MB at most (goal < 100: %s); twice the records: %sx\n' \
    "$worst" "$(under100 "$worst")" "$growth"
[ "${exported[1]}" = "${held[1]}" ] && [ "${exported[2]}" = "${held[2]}" ] ||
    echo "note: kafka-topic-backup exported ${exported[*]} records where the broker held ${held[*]}" >&2
