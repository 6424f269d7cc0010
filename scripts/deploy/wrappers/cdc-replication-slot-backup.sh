#!/bin/sh
# Drop-in for the old shell script of this name (a CronJob or runbook calling it keeps working):
# runs cdc-slot-tool backup: replication slots, LSN positions, publications.
# Reads the same environment (PG*, BACKUP_DIR, RETENTION_DAYS).
# Arguments go to the tool unchanged; its exit code is this script's.
set -eu
tool=cdc-slot-tool
here=$(dirname -- "$0")
# The tool next to this script (the image puts both in /usr/local/bin), else PATH.
if [ -x "$here/$tool" ]; then
    exec "$here/$tool" backup "$@"
fi
if command -v "$tool" >/dev/null 2>&1; then
    exec "$tool" backup "$@"
fi
echo "cdc-replication-slot-backup.sh: cannot find $tool next to this script ($here) or on PATH;" \
    "install the pipeline-backup tools" >&2
exit 2
