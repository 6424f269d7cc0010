#!/usr/bin/env bash
# The main job end to end on local defaults, for a newcomer on a fresh machine: installs what
# is missing, builds the tools, starts the Kafka-protocol test broker on 127.0.0.1, and runs
# `validate-backups drill`, which starts a throwaway PostgreSQL 15 cluster (WAL archived by
# wal-archive, wal_level=logical), takes the full pipeline backup (base backup + WAL, logical
# dump, replication slots, a topic), simulates a disaster (drops a table, deletes the topic,
# crashes the server), restores every component to the last good point, checks the data that
# came back, restores the whole pipeline (PostgreSQL, its CDC topic and the connector's
# offset, streamed by a Debezium-shaped connector emulator) to one consistent point, and
# prints the measured RTO and RPO per component. Extra arguments go to the drill (e.g.
# --output json, --keep, --cdc-rows N).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "quickstart: building the tools (release; the first build takes several minutes)" >&2
cargo build --release --bins -q
if scripts/services.sh env >/dev/null; then
    eval "$(scripts/services.sh env)"
else
    eval "$(scripts/services.sh start)"
    trap 'scripts/services.sh stop' EXIT
fi
target/release/validate-backups drill --bootstrap-servers "$PIPELINE_BACKUP_TEST_KAFKA" "$@"
