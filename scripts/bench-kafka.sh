#!/usr/bin/env bash
# Benchmark of kafka-topic-backup and kafka-replay against kcat and a bare rdkafka
# consumer that discards what it reads (the broker's limit), side by side in one run.
#
#   scripts/bench-kafka.sh                       one million ~200-byte records, a key and two
#                                                headers each, over 3 partitions; 5 runs
#   RECORDS=200000 RUNS=3 scripts/bench-kafka.sh a smaller run
#   SCALE_PARTITIONS=0 ...                       without the memory-against-topic-size part
#
# Every tool reads or writes the same records: the export tools read the source topic whole;
# the replays write the same keys, values and headers into a fresh 3-partition topic (kcat -P
# from the file kcat -C wrote, with the records' two headers; kafka-replay from the backup
# set). Each run alternates which tool goes first, and each measurement starts once the broker
# is idle (when it runs here). The table shows medians of wall time and peak RSS; the ratios
# the goals are stated in are those of the medians, and beside them the median of the per-run
# ratios (the two tools measured in the same run: drift of a noisy machine cancels out).
#
# The broker: KAFKA_BOOTSTRAP_SERVERS, else PIPELINE_BACKUP_TEST_KAFKA, else the one
# scripts/services.sh started; with none of them, scripts/services.sh starts the test services
# for the run and stops them after. Installs kcat and GNU time when missing.
# The export is also measured encrypted (age, to a recipient from age-keygen) in
# the same runs, beside the plain one.
# Goals: export >= kcat and >= 0.9x the bare consumer; replay >= kcat; peak memory < 100 MB;
# encryption adds <= 10% wall time to the export.
# The memory goal against a broker that honours fetch size limits: scripts/bench-kafka-memory.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# No broker named and none running from scripts/services.sh: start the test services, run the
# benchmark against them, and stop them after (as scripts/test.sh does).
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}${PIPELINE_BACKUP_TEST_KAFKA:-}" ] \
    && ! kill -0 "$(cat .cache/services/kafka.pid 2>/dev/null)" 2>/dev/null; then
    eval "$(scripts/services.sh start)"
    trap 'scripts/services.sh stop' EXIT
    status=0
    scripts/bench-kafka.sh "$@" || status=$?
    exit "$status"
fi
BROKER=${KAFKA_BOOTSTRAP_SERVERS:-${PIPELINE_BACKUP_TEST_KAFKA:-$(cat .cache/services/kafka.addr 2>/dev/null || true)}}
# The broker scripts/services.sh started runs here: each measurement waits until it is idle.
if [ -n "$BROKER" ] && [ "$BROKER" = "$(cat .cache/services/kafka.addr 2>/dev/null)" ]; then
    BROKER_PID=$(cat .cache/services/kafka.pid)
fi
RECORDS=${RECORDS:-1000000}
RUNS=${RUNS:-5}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[ -n "$BROKER" ] || { echo "bench: no broker (set KAFKA_BOOTSTRAP_SERVERS or run scripts/services.sh start)" >&2; exit 2; }
need=()
command -v kcat >/dev/null || need+=(kcat)
command -v age-keygen >/dev/null || need+=(age)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

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
HEADERS=(-H trace=0af7651916cd43dd8448eb211c80319c -H source=bench)
cleanup() {
    "$BIN/examples/kafka_bench" delete "$SRC" "${RUN}_wide_1" "${RUN}_wide_2" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "bench: producing $RECORDS records into $SRC on $BROKER ..." >&2
"$BIN/examples/kafka_bench" create "$SRC" 3
awk -v n="$RECORDS" 'BEGIN {
    pad = sprintf("%0160d", 0)
    for (i = 0; i < n; i++) printf "user-%06d\tevent-%09d-%s\n", i % 50000, i, pad
}' | kcat -P -b "$BROKER" "${KCAT_X[@]}" -t "$SRC" -K $'\t' "${HEADERS[@]}"

source scripts/lib/measure.sh

export_bare() { measure bare "$BIN/examples/kafka_bench" consume "$SRC" >/dev/null; }
export_kcat() {
    measure kcat_export bash -c "kcat -C -b '$BROKER' ${KCAT_X[*]} -t '$SRC' -o beginning -e -q -f '%k\t%s\n' > '$WORK/kcat.out'"
}
export_ours() {
    rm -rf "$WORK/repo"
    measure ours_export "$BIN/kafka-topic-backup" -q --topic "$SRC" --backup-dir "$WORK/repo" --no-retention >/dev/null
}
# The recipient is a public key: no secret in the environment or on the command line.
age-keygen -o "$WORK/age-identity.txt" 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y "$WORK/age-identity.txt")
export_ours_age() {
    rm -rf "$WORK/repo_age"
    measure ours_export_age env BACKUP_ENCRYPTION_RECIPIENTS="$AGE_RECIPIENT" \
        "$BIN/kafka-topic-backup" -q --topic "$SRC" --backup-dir "$WORK/repo_age" --no-retention >/dev/null
}
replay_kcat() {
    local topic=${RUN}_kcat_$1
    "$BIN/examples/kafka_bench" create "$topic" 3
    measure kcat_replay kcat -P -b "$BROKER" "${KCAT_X[@]}" -t "$topic" -K $'\t' "${HEADERS[@]}" -l "$WORK/kcat.out"
    # The test broker keeps every topic in memory: drop each target once measured.
    "$BIN/examples/kafka_bench" delete "$topic"
}
# kcat's producer is not idempotent unless asked; kafka-replay's always is (no duplicates on
# retries), so both kcat variants are shown and the goal is judged against the faster, plain one.
# kafka-replay compresses its batches (lz4 for a topic that leaves the codec to the producer,
# as the bench's does); kcat -P -z lz4 is shown too, so the comparison with kcat given the same
# compression is in the table.
replay_kcat_idem() {
    local topic=${RUN}_kcati_$1
    "$BIN/examples/kafka_bench" create "$topic" 3
    measure kcat_idem_replay kcat -P -b "$BROKER" "${KCAT_X[@]}" -X enable.idempotence=true -t "$topic" -K $'\t' "${HEADERS[@]}" -l "$WORK/kcat.out"
    "$BIN/examples/kafka_bench" delete "$topic"
}
replay_kcat_lz4() {
    local topic=${RUN}_kcatz_$1
    "$BIN/examples/kafka_bench" create "$topic" 3
    measure kcat_lz4_replay kcat -P -z lz4 -b "$BROKER" "${KCAT_X[@]}" -t "$topic" -K $'\t' "${HEADERS[@]}" -l "$WORK/kcat.out"
    "$BIN/examples/kafka_bench" delete "$topic"
}
replay_ours() {
    local topic=${RUN}_ours_$1
    # Created beforehand like kcat's target (kafka-replay would create it from the set).
    "$BIN/examples/kafka_bench" create "$topic" 3
    measure ours_replay "$BIN/kafka-replay" -q --topic "$SRC" --target-topic "$topic" --backup-dir "$WORK/repo" >/dev/null
    "$BIN/examples/kafka_bench" delete "$topic"
}

for run in $(seq 1 "$RUNS"); do
    echo "bench: export run $run of $RUNS ..." >&2
    if [ $((run % 2)) = 1 ]; then
        export_bare; export_kcat; export_ours; export_ours_age
    else
        export_ours_age; export_ours; export_kcat; export_bare
    fi
done
# The test broker keeps every topic in memory, and the more it holds the slower it takes new
# records (its own CPU time per replay doubles or more). The replays need only the set and
# kcat's file, so the source topic goes first: they measure the tools rather than the broker's
# memory, as they would against Kafka's on-disk log.
"$BIN/examples/kafka_bench" delete "$SRC"
for run in $(seq 1 "$RUNS"); do
    echo "bench: replay run $run of $RUNS ..." >&2
    if [ $((run % 2)) = 1 ]; then
        replay_kcat "$run"; replay_kcat_idem "$run"; replay_kcat_lz4 "$run"; replay_ours "$run"
    else
        replay_ours "$run"; replay_kcat_lz4 "$run"; replay_kcat_idem "$run"; replay_kcat "$run"
    fi
done

# Memory against topic size. This broker answers a fetch with the rest of a partition whatever
# the fetch size limits, so a reader holds whole partitions: a bounded reader keeps a bounded
# number of them at once, whatever the topic size. Two topics with the same partition size,
# one twice the other (SCALE_RECORDS over SCALE_PARTITIONS, then twice both), exported once
# each by every tool: peak memory should stay flat for ours and double for the others.
SCALE_RECORDS=${SCALE_RECORDS:-$RECORDS}
SCALE_PARTITIONS=${SCALE_PARTITIONS:-30}
if [ "$SCALE_PARTITIONS" -gt 0 ]; then
    for factor in 1 2; do
        topic=${RUN}_wide_$factor
        echo "bench: memory at $((SCALE_RECORDS * factor)) records over $((SCALE_PARTITIONS * factor)) partitions ..." >&2
        "$BIN/examples/kafka_bench" create "$topic" $((SCALE_PARTITIONS * factor))
        awk -v n=$((SCALE_RECORDS * factor)) 'BEGIN {
            pad = sprintf("%0160d", 0)
            for (i = 0; i < n; i++) printf "user-%06d\tevent-%09d-%s\n", i % 50000, i, pad
        }' | kcat -P -b "$BROKER" "${KCAT_X[@]}" -t "$topic" -K $'\t' "${HEADERS[@]}"
        measure "wide${factor}_bare" "$BIN/examples/kafka_bench" consume "$topic" >/dev/null
        measure "wide${factor}_kcat" bash -c "kcat -C -b '$BROKER' ${KCAT_X[*]} -t '$topic' -o beginning -e -q -f '%k\t%s\n' > /dev/null"
        rm -rf "$WORK/wide"
        measure "wide${factor}_ours" "$BIN/kafka-topic-backup" -q --topic "$topic" --backup-dir "$WORK/wide" --no-retention >/dev/null
        rm -rf "$WORK/wide"
        "$BIN/examples/kafka_bench" delete "$topic"
    done
fi

rate() { awk -v n="$RECORDS" -v s="$(median "$1" 1)" 'BEGIN { if (s == "failed") print "failed"; else printf "%.0f", n / (s > 0 ? s : 0.001) }'; }
ratio() { awk -v a="$(rate "$1")" -v b="$(rate "$2")" 'BEGIN { if (a == "failed" || b == "failed") print "n/a"; else printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v goal="$2" 'BEGIN { if (r == "n/a") print "n/a"; else print (r >= goal ? "ok" : "MISSED") }'; }

printf '\n%d records over 3 partitions, archive %s bytes, medians of %d runs\n\n' \
    "$RECORDS" "$(du -sb "$WORK/repo" | cut -f1)" "$RUNS"
printf '%-8s %-26s %12s %10s %10s %10s\n' phase tool records/s "median s" "peak MB" "CPU s"
for row in "export bare-rdkafka-consumer bare" "export kcat-C kcat_export" \
    "export kafka-topic-backup ours_export" "export kafka-topic-backup-age ours_export_age" \
    "replay kcat-P kcat_replay" \
    "replay kcat-P-idempotent kcat_idem_replay" "replay kcat-P-lz4 kcat_lz4_replay" \
    "replay kafka-replay ours_replay"; do
    set -- $row
    printf '%-8s %-26s %12s %10s %10s %10s\n' "$1" "$2" "$(rate "$3")" "$(median "$3" 1)" "$(peak "$3")" "$(median "$3" 3)"
done
e_kcat=$(ratio ours_export kcat_export)
e_bare=$(ratio ours_export bare)
r_kcat=$(ratio ours_replay kcat_replay)
r_kcat_idem=$(ratio ours_replay kcat_idem_replay)
mem_bare=$(awk -v a="$(peak ours_export)" -v b="$(peak bare)" 'BEGIN { printf "%.2f", a / b }')
printf '\nexport vs kcat:          %sx (goal >= 1.0: %s), per run %sx\n' "$e_kcat" "$(verdict "$e_kcat" 1.0)" "$(paired ours_export kcat_export)"
printf 'export vs bare consumer: %sx (goal >= 0.9: %s), per run %sx\n' "$e_bare" "$(verdict "$e_bare" 0.9)" "$(paired ours_export bare)"
printf 'replay vs kcat:          %sx (goal >= 1.0: %s), per run %sx\n' "$r_kcat" "$(verdict "$r_kcat" 1.0)" "$(paired ours_replay kcat_replay)"
# Encrypted over plain wall time: of the medians, and the median of the per-run ratios.
e_age=$(awk -v a="$(median ours_export_age 1)" -v b="$(median ours_export 1)" 'BEGIN { if (a == "failed" || b == "failed" || b <= 0) print "n/a"; else printf "%.2f", a / b }')
e_age_run=$(paired ours_export ours_export_age)
printf 'export encrypted/plain:  %sx wall time (goal <= 1.10: %s), per run %sx; archive %s vs %s bytes\n' \
    "$e_age" "$(awk -v r="$e_age_run" 'BEGIN { if (r == "n/a") print "n/a"; else print (r <= 1.10 ? "ok" : "MISSED") }')" "$e_age_run" \
    "$(du -sb "$WORK/repo_age" | cut -f1)" "$(du -sb "$WORK/repo" | cut -f1)"
printf 'replay vs idempotent kcat: %sx, per run %sx\n' "$r_kcat_idem" "$(paired ours_replay kcat_idem_replay)"
printf 'replay vs kcat -z lz4:   %sx, per run %sx\n' "$(ratio ours_replay kcat_lz4_replay)" "$(paired ours_replay kcat_lz4_replay)"
printf 'CPU per run, ours vs kcat: export %s s vs %s s, replay %s s vs %s s\n' \
    "$(median ours_export 3)" "$(median kcat_export 3)" "$(median ours_replay 3)" "$(median kcat_replay 3)"
printf 'replay peak memory:      %s MB (goal < 100: %s)\n' "$(peak ours_replay)" "$(under100 "$(peak ours_replay)")"
if [ "$(awk -v m="$(peak bare)" 'BEGIN { print (m >= 100) }')" = 1 ]; then
    # See the note below: here the broker, not the reader, sets the export's memory.
    printf 'export peak memory:      %s MB (goal < 100: not measurable on this broker), %sx the bare consumer\n' \
        "$(peak ours_export)" "$mem_bare"
else
    printf 'export peak memory:      %s MB (goal < 100: %s), %sx the bare consumer\n' \
        "$(peak ours_export)" "$(under100 "$(peak ours_export)")" "$mem_bare"
fi
if [ "$SCALE_PARTITIONS" -gt 0 ]; then
    printf '\nexport peak MB by topic size (%s records per partition):\n' $((SCALE_RECORDS / SCALE_PARTITIONS))
    printf '%-26s %12s %12s %8s\n' tool "$SCALE_RECORDS rec" "$((SCALE_RECORDS * 2)) rec" growth
    for row in "bare-rdkafka-consumer bare" "kcat-C kcat" "kafka-topic-backup ours"; do
        set -- $row
        printf '%-26s %12s %12s %7sx\n' "$1" "$(peak "wide1_$2")" "$(peak "wide2_$2")" \
            "$(awk -v a="$(peak "wide1_$2")" -v b="$(peak "wide2_$2")" 'BEGIN { if (a == "-" || b == "-") print "n/a"; else printf "%.2f", b / a }')"
    done
fi
if [ "$(awk -v m="$(peak bare)" 'BEGIN { print (m >= 100) }')" = 1 ]; then
    echo "note: the bare consumer alone peaks at $(peak bare) MB: this broker answers a fetch with a whole"
    echo "      partition whatever the fetch size limits, so no librdkafka client stays under 100 MB here."
    echo "      scripts/bench-kafka-memory.sh measures the export on a broker that honours the limits."
fi
