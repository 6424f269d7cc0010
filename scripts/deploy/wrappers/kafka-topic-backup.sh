#!/bin/sh
# Drop-in for the old shell script of this name (a CronJob or runbook calling it keeps working):
# runs kafka-topic-backup: topic records, configs, consumer-group offsets.
# Reads the same environment (KAFKA_BOOTSTRAP_SERVERS, BACKUP_DIR, RETENTION_DAYS).
# Arguments go to the tool unchanged; its exit code is this script's.
set -eu
tool=kafka-topic-backup
here=$(dirname -- "$0")
# The tool next to this script (the image puts both in /usr/local/bin), else PATH.
if [ -x "$here/$tool" ]; then
    exec "$here/$tool" "$@"
fi
if command -v "$tool" >/dev/null 2>&1; then
    exec "$tool" "$@"
fi
echo "kafka-topic-backup.sh: cannot find $tool next to this script ($here) or on PATH;" \
    "install the pipeline-backup tools" >&2
exit 2
