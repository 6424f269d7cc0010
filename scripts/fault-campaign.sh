#!/usr/bin/env bash
# The fault campaign (issue 18): kills every backup and restore tool with SIGKILL at seeded
# random moments, fills the disk under them, restarts or kills the services under them (the
# broker and S3 server killed are private ones), feeds them hostile tarballs and names, and checks
# that no set that looks complete is damaged, that the next run works and that restores give
# exactly the source's data. Prints a table (scenario, trials, ok, failed, seeds of failures)
# and writes fault-report.json; exits 0 only when every trial ended as it should.
#
#   scripts/fault-campaign.sh [--quick] [--seed N] [--scenario NAME]... [--trials N]
#                             [--report PATH] [--list]
#
#   --quick           the CI tier (scripts/test.sh runs it): 5 trials per kill scenario (1-2 for the
#                     --pgdata ones) instead of 50, 1 per disk-full case, 1 per service case
#                     (PostgreSQL restarted, private broker/S3 killed, S3 stalling) instead of 10
#   --seed N          trial K of a scenario uses seed N+K (default: from the clock, printed)
#   --scenario NAME   only NAME, or every scenario starting with NAME: (e.g. kill, disk-full,
#                     kill:pg-base-backup); repeatable
#   --trials N        trials per scenario; `--scenario NAME --seed SEED --trials 1` repeats one
#   --report PATH     where the JSON report goes (default: fault-report.json in the repository root)
#
# Builds the tools, starts the test services unless they run (and stops them afterwards only
# if it started them), and runs as root: PostgreSQL clusters run as the postgres user and the
# disk-full scenarios mount small tmpfs filesystems.
set -euo pipefail
cd "$(dirname "$0")/.."

report="$PWD/fault-report.json"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --report) report=$2; shift 2 ;;
        --report=*) report=${1#--report=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done

scripts/install-deps.sh
if scripts/services.sh env >/dev/null; then
    eval "$(scripts/services.sh env)"
else
    eval "$(scripts/services.sh start)"
    trap 'scripts/services.sh stop' EXIT
fi
# Every tool and the campaign itself, in one profile: the campaign runs the tools beside it.
cargo build --workspace --all-features --bins
"${CARGO_TARGET_DIR:-target}/debug/fault-campaign" --report "$report" "${args[@]}"
