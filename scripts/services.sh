#!/usr/bin/env bash
# Starts and stops the services the tests use, for development and CI, on 127.0.0.1 only.
#
#   scripts/services.sh start   start the Kafka-protocol test broker (idempotent); prints
#                               `export PIPELINE_BACKUP_TEST_KAFKA=127.0.0.1:PORT`
#   scripts/services.sh env     print that line again for the running broker
#   scripts/services.sh stop    stop what start started and remove its data
#
# PostgreSQL needs no service here: each test creates its own throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.cache/services
PIDFILE=$STATE/kafka.pid
ADDRFILE=$STATE/kafka.addr
VENV=.cache/venv

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

noida_bin() {
    "$VENV/bin/python" -c 'import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))'
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1
    for _ in $(seq 1 150); do
        if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
            return 0
        fi
        running || return 1
        sleep 0.2
    done
    return 1
}

start() {
    mkdir -p "$STATE"
    if running; then
        echo "export PIPELINE_BACKUP_TEST_KAFKA=$(cat "$ADDRFILE")"
        return
    fi
    [ -x "$VENV/bin/python" ] || scripts/install-deps.sh
    local port data bin
    port=${PIPELINE_BACKUP_KAFKA_PORT:-$(free_port)}
    data=$STATE/kafka-data
    rm -rf "$data"
    mkdir -p "$data"
    bin=$(noida_bin)
    # setsid: the broker outlives this script and is stopped by `stop`, not by a terminal.
    setsid "$bin" start --only kafka --host 127.0.0.1 --kafka-port "$port" --data-dir "$data" \
        >"$STATE/kafka.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    if ! wait_port "$port"; then
        echo "services: the broker did not start; its log:" >&2
        cat "$STATE/kafka.log" >&2
        stop
        exit 2
    fi
    echo "127.0.0.1:$port" >"$ADDRFILE"
    echo "services: Kafka-protocol broker on 127.0.0.1:$port (pid $(cat "$PIDFILE"))" >&2
    echo "export PIPELINE_BACKUP_TEST_KAFKA=127.0.0.1:$port"
}

stop() {
    if [ -f "$PIDFILE" ]; then
        local pid
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE" "$ADDRFILE"
        echo "services: broker stopped" >&2
    fi
    rm -rf "$STATE/kafka-data"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) running && echo "export PIPELINE_BACKUP_TEST_KAFKA=$(cat "$ADDRFILE")" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
