#!/usr/bin/env bash
# The test command: installs what is missing, starts the test broker, runs every test of the
# workspace against real PostgreSQL clusters and the real broker, and stops the broker.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p pg-base-backup).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Stop the broker afterwards only if this run started it (a developer's may be running).
if scripts/services.sh env >/dev/null; then
    eval "$(scripts/services.sh env)"
else
    eval "$(scripts/services.sh start)"
    trap 'scripts/services.sh stop' EXIT
fi
# Tests of one crate drive other crates' tools (a CDC drill uses the PITR tools): build all.
cargo build --workspace --all-features --bins
if [ $# -gt 0 ]; then
    cargo test --all-features "$@"
else
    cargo test --workspace --all-features
fi
# Deployment: manifests, alert rules, image contents, drop-in wrappers, the CronJobs' command
# lines and the runbook's scenarios against the binaries built above and the test broker.
[ $# -gt 0 ] || scripts/deploy/check.sh
# The fault campaign's CI tier (issue 18): every tool killed at seeded random moments, disk
# full, hostile input, a wiped repository, pgbench load with PITR to restore points.
[ $# -gt 0 ] || scripts/fault-campaign.sh --quick --report "${CARGO_TARGET_DIR:-target}/fault-report.json"
