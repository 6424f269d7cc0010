#!/usr/bin/env bash
# Installs what the tests and the tools need on a fresh Debian machine, skipping what is there:
# PostgreSQL 15 server and client binaries, util-linux's flock, and the Kafka-protocol test
# broker (noida-db from PyPI, in a virtualenv under .cache/). Idempotent.
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

if [ ${#packages[@]} -gt 0 ]; then
    echo "install-deps: installing ${packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi

VENV=.cache/venv
NOIDA_VERSION=0.2.3
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('noida-db') == '$NOIDA_VERSION'" 2>/dev/null; then
    echo "install-deps: installing noida-db $NOIDA_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "noida-db==$NOIDA_VERSION"
fi
