#!/usr/bin/env bash
# The test command: installs what is missing, starts the test broker, runs every test of the
# workspace against real PostgreSQL clusters and the real broker, and stops the broker.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p pg-base-backup).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop' EXIT
# Tests of one crate drive other crates' tools (a CDC drill uses the PITR tools): build all.
cargo build --workspace --all-features --bins
cargo test --workspace --all-features "$@"
