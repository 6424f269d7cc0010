#!/usr/bin/env bash
# Tests the deployment files in scripts/deploy against real validators and the real tools,
# one PASS/FAIL line per check (scripts/deploy/README.md lists them), in sections:
#   manifests  yamllint; the Kubernetes schemas (kubernetes-validate ships them: offline),
#              strict, for the oldest and newest supported version; policy.py
#   alerts     promtool check rules, promtool test rules
#   image      what the Containerfile copies and installs; the binaries' shared libraries
#   wrappers   each drop-in wrapper runs its tool (beside it, or on PATH), exit codes included
#   docs       every tool command of docs/runbook.md parses against the built binaries
#   real       a throwaway PostgreSQL cluster: the wrappers with no arguments, every CronJob's
#              command line, promtool check metrics on the files the tools wrote, runbook
#              scenarios 1 (PITR, slot restore) and 2 (lost slot)
#   kafka      on the test broker: runbook scenarios 4 (`_schemas` lost) and 3 (time range)
#
# Usage: scripts/deploy/check.sh [SECTION...]   [default: all], after `cargo build --bins`
#   (scripts/test.sh does that)
#   PIPELINE_BACKUP_BIN_DIR  where the tool binaries are [default: $CARGO_TARGET_DIR/debug,
#                            else target/debug]
#   PIPELINE_BACKUP_TEST_KAFKA  the test broker (scripts/services.sh start prints it); without
#                            it the kafka section is skipped
#   DEPLOY_CHECK_KEEP=1      keep the scratch directory (clusters, repository, logs)
# Installs yamllint, kubernetes-validate and confluent-kafka into .cache/deploy-venv, and
# Debian's prometheus package when promtool is missing. Runs as root (the PostgreSQL parts then
# run as the postgres user) or as a user who can run PostgreSQL. The last line is
# "N passed, M failed, K skipped"; exits 1 when a check failed, 2 when the checks could not be
# set up.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
DEPLOY=$ROOT/scripts/deploy
VENV=$ROOT/.cache/deploy-venv
BIN_DIR=${PIPELINE_BACKUP_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
YAMLLINT_VERSION=1.38.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The independent Kafka client of the scenario 4 check (kafka_fixture.py).
CONFLUENT_KAFKA_VERSION=2.16.1
# The oldest Kubernetes the manifests are for: CronJob's timeZone is GA since 1.27.
K8S_OLDEST=1.27.0

# wrapper name -> the tool command it runs (the seed's script names, issue 8).
WRAPPERS=(
    "postgresql-base-backup.sh:pg-base-backup"
    "postgresql-logical-backup.sh:pg-logical-backup"
    "postgresql-pitr-restore.sh:pitr-restore"
    "kafka-topic-backup.sh:kafka-topic-backup"
    "kafka-topic-replay.sh:kafka-replay"
    "cdc-replication-slot-backup.sh:cdc-slot-tool backup"
    "cdc-replication-slot-restore.sh:cdc-slot-tool restore"
    "validate-backups.sh:validate-backups"
)

passed=0
failed=0
skipped=0
WORK=$(mktemp -d /tmp/deploy-check.XXXXXX)
chmod 755 "$WORK"
LOG=$WORK/last.log
SERVERS=()

cleanup() {
    local data
    for data in "${SERVERS[@]}"; do
        as_db "$PG_BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1
    done
    if [ -n "${DEPLOY_CHECK_KEEP:-}" ]; then echo "check: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "PASS $1"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $1: $2"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL $1: $2"
    [ -s "$LOG" ] && tail -n 25 "$LOG" | sed 's/^/    /'
}

# check NAME COMMAND...: passes when the command exits 0; its output goes to $LOG.
check() {
    local name=$1
    shift
    if "$@" >"$LOG" 2>&1; then pass "$name"; else fail "$name" "exit $?"; fi
}

# Runs a command as the database's OS user when we are root (PostgreSQL refuses root), with
# the environment kept.
as_db() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/tmp USER=postgres "$@"
    else
        "$@"
    fi
}

install_tools() {
    if ! "$VENV/bin/python" - 2>/dev/null <<EOF
import importlib.metadata as m
assert m.version("yamllint") == "$YAMLLINT_VERSION"
assert m.version("kubernetes-validate") == "$KUBERNETES_VALIDATE_VERSION"
assert m.version("confluent-kafka") == "$CONFLUENT_KAFKA_VERSION"
EOF
    then
        echo "check: installing yamllint, kubernetes-validate, confluent-kafka into $VENV" >&2
        if ! { python3 -m venv "$VENV" &&
            "$VENV/bin/pip" install -q "yamllint==$YAMLLINT_VERSION" \
                "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
                "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >&2; }; then
            echo "check: cannot install the Python validators" >&2
            exit 2
        fi
    fi
    if ! command -v promtool >/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            echo "check: promtool missing; install Debian's prometheus package" >&2
            exit 2
        fi
        echo "check: installing promtool (Debian package prometheus)" >&2
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >&2 ||
            { echo "check: cannot install prometheus" >&2; exit 2; }
    fi
}

# --- manifests -------------------------------------------------------------------------------

check_manifests() {
    check yaml.lint "$VENV/bin/yamllint" --strict -c "$DEPLOY/.yamllint" "$DEPLOY"
    check k8s.schema.oldest "$VENV/bin/kubernetes-validate" --strict --quiet \
        -k "$K8S_OLDEST" "$DEPLOY/backup-cronjobs.yaml" "$DEPLOY/toolbox-pod.yaml"
    check k8s.schema.newest "$VENV/bin/kubernetes-validate" --strict --quiet \
        -k "$KUBERNETES_VALIDATE_VERSION" "$DEPLOY/backup-cronjobs.yaml" "$DEPLOY/toolbox-pod.yaml"
    # The validator must really validate (offline, with its bundled schemas): a misspelt field
    # and a wrong type are both refused.
    sed 's/concurrencyPolicy: Forbid/concurrencyPolicyy: Forbid/; s/backoffLimit: 1$/backoffLimit: "one"/' \
        "$DEPLOY/backup-cronjobs.yaml" >"$WORK/broken.yaml"
    if "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/broken.yaml" >"$LOG" 2>&1; then
        fail k8s.schema.rejects-broken "a manifest with a misspelt field passed"
    elif grep -q "concurrencyPolicyy" "$LOG" && grep -q "'one' is not of type" "$LOG"; then
        pass k8s.schema.rejects-broken
    else
        fail k8s.schema.rejects-broken "rejected, but not for the two planted errors"
    fi
    check k8s.policy "$VENV/bin/python" "$DEPLOY/policy.py" \
        "$DEPLOY/backup-cronjobs.yaml" "$DEPLOY/Containerfile" "$DEPLOY/toolbox-pod.yaml"
}

check_alert_rules() {
    check alerts.check-rules promtool check rules "$DEPLOY/alert-rules.yaml"
    check alerts.test-rules promtool test rules "$DEPLOY/alert-rules.test.yaml"
}

# The image build cannot run here (no container engine), so check what it copies: every
# workspace member (else cargo fails in the build), every tool package as a binary, and every
# tool a wrapper calls.
check_containerfile() {
    if "$VENV/bin/python" - "$ROOT/Cargo.toml" "$DEPLOY/Containerfile" "${WRAPPERS[@]}" >"$LOG" 2>&1 <<'EOF'
import re, sys, tomllib
cargo, containerfile, wrappers = sys.argv[1], sys.argv[2], sys.argv[3:]
members = set(tomllib.load(open(cargo, "rb"))["workspace"]["members"])
text = open(containerfile).read()
copied = set(re.findall(r"^COPY ([\w-]+)/ \1/$", text, re.M))
loop = re.search(r"for tool in ([^;]+);", text)
tools = set(loop.group(1).replace("\\", " ").split()) if loop else set()
wanted = {w.split(":")[1].split()[0] for w in wrappers}
problems = []
if members - copied:
    problems.append(f"members not copied into the build: {sorted(members - copied)}")
if copied - members:
    problems.append(f"copied folders that are not members: {sorted(copied - members)}")
# Members that are not shipped tools: the shared library, the drill's CDC connector emulator,
# test helpers, the fault campaign.
if tools != members - {"common", "cdc-emulator", "test-support", "fault-campaign"}:
    problems.append(f"binaries {sorted(tools)} differ from the tool members")
if wanted - tools:
    problems.append(f"wrappers call tools the image lacks: {sorted(wanted - tools)}")
print("\n".join(problems) or f"{len(tools)} tools, {len(members)} members")
sys.exit(1 if problems else 0)
EOF
    then
        pass image.contents
    else
        fail image.contents "see above"
    fi

    check_image_postgres_programs

    # The runtime stage is debian-slim plus PostgreSQL: the binaries may need glibc and
    # libgcc_s only (librdkafka, zstd and zlib are linked in).
    local entry tool libs bad=()
    : >"$LOG"
    for entry in "${WRAPPERS[@]}"; do
        tool=${entry#*:}
        tool=${tool%% *}
        [ -x "$BIN_DIR/$tool" ] || continue
        libs=$(ldd "$BIN_DIR/$tool" | awk '{print $1}' |
            grep -v -E '^(linux-vdso\.so|/lib64/ld-linux|/lib/ld-linux|lib(c|m|gcc_s|pthread|dl|rt)\.so)')
        [ -z "$libs" ] || { bad+=("$tool"); echo "$tool: $libs" >>"$LOG"; }
    done
    if [ ${#bad[@]} = 0 ]; then
        pass image.runtime-libraries
    else
        fail image.runtime-libraries "${bad[*]} need libraries the runtime image lacks"
    fi
}

# Every PostgreSQL program the tools run (a string literal naming a program of $PG_BIN in
# their sources) comes from a Debian package the runtime stage installs.
check_image_postgres_programs() {
    if ! command -v dpkg >/dev/null || [ ! -d "$PG_BIN" ]; then
        skip image.postgres-programs "needs dpkg and PostgreSQL 15 in $PG_BIN to map programs"
        return
    fi
    local dirs=() member program package missing=() programs=()
    for member in $("$VENV/bin/python" -c 'import sys, tomllib
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["workspace"]["members"]))' "$ROOT/Cargo.toml"); do
        case $member in test-support | fault-campaign) ;; *) dirs+=("$ROOT/$member/src") ;; esac
    done
    for program in $(grep -rhoE '"(pg_[a-z_]+|psql|initdb|postgres)"' --include='*.rs' "${dirs[@]}" |
        tr -d '"' | sort -u); do
        [ -x "$PG_BIN/$program" ] || continue
        programs+=("$program")
        package=$(dpkg -S "$PG_BIN/$program" 2>/dev/null | cut -d: -f1)
        grep -qE "apt-get install .*\b$package\b" "$DEPLOY/Containerfile" ||
            missing+=("$program ($package)")
    done
    : >"$LOG"
    if [ ${#programs[@]} = 0 ]; then
        fail image.postgres-programs "found no PostgreSQL program in the tools' sources"
    elif [ ${#missing[@]} = 0 ]; then
        pass image.postgres-programs
    else
        fail image.postgres-programs "the image lacks the packages of: ${missing[*]}"
    fi
}

# --- wrappers --------------------------------------------------------------------------------

check_wrappers() {
    local entry wrapper command tool usage dir
    for entry in "${WRAPPERS[@]}"; do
        wrapper=${entry%%:*}
        command=${entry#*:}
        tool=${command%% *}
        usage="Usage: $command "
        if [ ! -x "$BIN_DIR/$tool" ]; then
            : >"$LOG"
            fail "wrapper.$wrapper" "$BIN_DIR/$tool is not built (cargo build -p $tool)"
            continue
        fi
        # On PATH: the wrapper runs from its own folder, which holds no tool.
        if PATH="$BIN_DIR:/usr/bin:/bin" "$DEPLOY/wrappers/$wrapper" --help >"$LOG" 2>&1 &&
            grep -q "^$usage" "$LOG"; then
            pass "wrapper.$wrapper.path"
        else
            fail "wrapper.$wrapper.path" "--help did not exit 0 with '$usage...'"
        fi
        # Beside it, as in the image (/usr/local/bin), with the tool not on PATH.
        dir=$WORK/beside-$tool
        mkdir -p "$dir"
        cp "$DEPLOY/wrappers/$wrapper" "$dir/"
        ln -sf "$BIN_DIR/$tool" "$dir/$tool"
        if PATH=/usr/bin:/bin "$dir/$wrapper" --help >"$LOG" 2>&1 && grep -q "^$usage" "$LOG"; then
            pass "wrapper.$wrapper.beside"
        else
            fail "wrapper.$wrapper.beside" "--help did not exit 0 with '$usage...'"
        fi
        # The tool's exit code comes through: a usage error is 2.
        PATH="$BIN_DIR:/usr/bin:/bin" "$DEPLOY/wrappers/$wrapper" --no-such-flag >"$LOG" 2>&1
        local code=$?
        if [ "$code" = 2 ] && grep -q -- "--no-such-flag" "$LOG"; then
            pass "wrapper.$wrapper.exit-code"
        else
            fail "wrapper.$wrapper.exit-code" "a bad flag gave exit $code, expected the tool's 2"
        fi
        # No tool anywhere: a one-line error naming it, exit 2.
        dir=$WORK/alone
        mkdir -p "$dir"
        cp "$DEPLOY/wrappers/$wrapper" "$dir/"
        PATH=/usr/bin:/bin "$dir/$wrapper" --help >"$LOG" 2>&1
        code=$?
        if [ "$code" = 2 ] && grep -q "cannot find $tool" "$LOG"; then
            pass "wrapper.$wrapper.missing-tool"
        else
            fail "wrapper.$wrapper.missing-tool" "exit $code without 'cannot find $tool'"
        fi
    done
}

# --- real runs on a throwaway cluster --------------------------------------------------------

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a cluster in $1 on port $2 with WAL archiving into $BACKUP_DIR and logical decoding.
start_cluster() {
    local data=$1 port=$2
    db_dir "$data" || return 1
    as_db "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >>"$LOG" 2>&1 || return 1
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
port = $port
unix_socket_directories = '$WORK/sock'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
archive_mode = on
archive_command = 'BACKUP_DIR=$BACKUP_DIR $BIN_DIR/wal-archive push %p'
fsync = off
EOF
    as_db "$PG_BIN/pg_ctl" -D "$data" -l "$data.log" -w start >>"$LOG" 2>&1 || return 1
    SERVERS+=("$data")
}

# A directory the database user owns, 0700 (the backup repository must not be world-readable).
db_dir() {
    install -d -m 700 "$1" && { [ "$(id -u)" != 0 ] || chown postgres: "$1"; }
}

# Ends the current WAL segment and waits (up to 30 s) until the archiver has stored it.
switch_wal_and_wait() {
    local segment last
    segment=$(psql_q -c "SELECT pg_walfile_name(pg_switch_wal())" 2>>"$LOG")
    for _ in $(seq 1 150); do
        last=$(psql_q -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver" 2>>"$LOG")
        if [ -n "$last" ] && [[ ! "$last" < "$segment" ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "check: WAL segment $segment was not archived within 30 s" >>"$LOG"
}

psql_q() { as_db "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# Runs a CronJob's command line from backup-cronjobs.yaml (cronjob_commands.py: its env
# entries, $(VAR)s expanded, volume paths moved under $WORK) against the test services.
run_cronjob() {
    local name=$1 argv=() envs=()
    if [ ! -f "$WORK/cron/$name.argv" ]; then
        "$VENV/bin/python" "$DEPLOY/cronjob_commands.py" "$DEPLOY/backup-cronjobs.yaml" \
            "$WORK/cron" "$WORK" >"$LOG" 2>&1 || { fail "real.cronjob.$name" "cannot read it"; return; }
    fi
    mapfile -d '' argv <"$WORK/cron/$name.argv"
    mapfile -d '' envs <"$WORK/cron/$name.env"
    check "real.cronjob.$name" as_db env PATH="$BIN_DIR:/usr/bin:/bin" "${envs[@]}" "${argv[@]}"
}

# The validate CronJob's command on a repository lacking `kind`: exit 1, the kind's checks
# failing, not skipped.
check_validate_requires() {
    local kind=$1 name=pipeline-backup-validate argv=() envs=() code
    if [ ! -f "$WORK/cron/$name.argv" ]; then
        "$VENV/bin/python" "$DEPLOY/cronjob_commands.py" "$DEPLOY/backup-cronjobs.yaml" \
            "$WORK/cron" "$WORK" >"$LOG" 2>&1 || { fail "real.cronjob.$name.requires-$kind" "cannot read it"; return; }
    fi
    mapfile -d '' argv <"$WORK/cron/$name.argv"
    mapfile -d '' envs <"$WORK/cron/$name.env"
    as_db env PATH="$BIN_DIR:/usr/bin:/bin" "${envs[@]}" "${argv[@]}" --output json >"$LOG" 2>&1
    code=$?
    if [ "$code" = 1 ] && grep -q "\"failed_checks\":\[[^]]*\"$kind\." "$LOG"; then
        pass "real.cronjob.$name.requires-$kind"
    else
        fail "real.cronjob.$name.requires-$kind" "exit $code: a repository without $kind sets was not a failure"
    fi
}

# A Kafka set in the real section's repository (BACKUP_DIR), from a fixture topic on the test
# broker, so that the validation CronJobs find every kind they require; 1 without a broker.
add_kafka_set() {
    local broker=${PIPELINE_BACKUP_TEST_KAFKA:-}
    [ -n "$broker" ] && [ -x "$BIN_DIR/kafka-topic-backup" ] || return 1
    local topic="pipeline_check_$$_$RANDOM"
    if "$VENV/bin/python" "$DEPLOY/kafka_fixture.py" "$broker" create "$topic" >"$LOG" 2>&1; then
        KAFKA_BOOTSTRAP_SERVERS=$broker check real.kafka-set run_wrapper kafka-topic-backup.sh --topic "$topic"
        "$VENV/bin/python" "$DEPLOY/kafka_fixture.py" "$broker" delete "$topic" >/dev/null 2>&1
    else
        fail real.kafka-set "cannot create the $topic topic"
    fi
    return 0
}

# Runs a wrapper as a CronJob would: found on PATH, configured by the environment alone.
run_wrapper() {
    local wrapper=$1
    shift
    as_db env PATH="$DEPLOY/wrappers:$BIN_DIR:/usr/bin:/bin" "$wrapper" "$@"
}

check_real_runs() {
    local why=""
    [ -x "$PG_BIN/initdb" ] || why="no PostgreSQL 15 in $PG_BIN"
    [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1 || why="running as root without a postgres user"
    local tool
    for tool in pg-base-backup wal-archive pg-logical-backup pitr-restore cdc-slot-tool; do
        [ -x "$BIN_DIR/$tool" ] || why="${why:-$BIN_DIR/$tool is not built}"
    done
    if [ -n "$why" ]; then
        skip real-runs "$why"
        skip metrics.promtool "no metrics file from a real tool run ($why)"
        return
    fi
    : >"$LOG"
    # The pods' volumes of backup-cronjobs.yaml under $WORK: /backups holds the repository,
    # the metrics textfiles and the slot-status state; /scratch the deep checks' restores.
    local dir
    for dir in db sock backups backups/repo backups/metrics backups/state scratch; do
        db_dir "$WORK/$dir" || exit 2
    done
    export BACKUP_DIR=$WORK/backups/repo PGHOST=$WORK/sock PGUSER=postgres PGDATABASE=postgres
    export NO_COLOR=1 BACKUP_NO_PROGRESS=1
    local port
    port=$(free_port)
    export PGPORT=$port
    if ! start_cluster "$WORK/db/primary" "$port"; then
        fail real.cluster "cannot start a PostgreSQL cluster"
        return
    fi
    if psql_q -c "CREATE TABLE orders (id int PRIMARY KEY, item text);
            INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
            CREATE PUBLICATION pipeline_pub FOR TABLE orders;" \
        -c "SELECT 1 FROM pg_create_logical_replication_slot('pipeline_slot', 'pgoutput')" \
        >>"$LOG" 2>&1; then
        pass real.cluster
    else
        fail real.cluster "cannot create the test data"
        return
    fi

    # Drop-in: the old script names, configured by the environment alone (no arguments).
    check real.dropin.base-backup run_wrapper postgresql-base-backup.sh
    check real.dropin.logical-backup run_wrapper postgresql-logical-backup.sh
    check real.dropin.slot-backup run_wrapper cdc-replication-slot-backup.sh
    # More rows, so the next logical set differs in size (validation's size change metric).
    psql_q -c "INSERT INTO orders SELECT g, 'more ' || g FROM generate_series(1001, 1100) g" >>"$LOG" 2>&1

    # The CronJobs' own command lines, in schedule order (the Kafka one in the kafka section).
    local name
    for name in base logical slots; do
        run_cronjob "pipeline-backup-$name"
    done
    switch_wal_and_wait
    # The scheduled validation requires every kind the CronJobs back up: before any Kafka set
    # exists (as on a wiped repository or a volume that failed to mount) it must fail.
    check_validate_requires kafka
    if add_kafka_set; then
        check real.dropin.validate run_wrapper validate-backups.sh
        for name in validate validate-deep; do
            run_cronjob "pipeline-backup-$name"
        done
    else
        skip real.cronjob.validate "no Kafka set in the repository: no test broker (PIPELINE_BACKUP_TEST_KAFKA)"
    fi
    for name in slot-status drill; do
        run_cronjob "pipeline-backup-$name"
    done
    check_metrics

    check_runbook_pitr
    check_runbook_lost_slot
}

# Runbook scenario 2, a lost slot on the running server: recreated from the newest slot backup
# with the runbook's dry run, then --force --yes.
check_runbook_lost_slot() {
    local slots="SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pipeline_slot'"
    psql_q -c "SELECT pg_drop_replication_slot('pipeline_slot')" >"$LOG" 2>&1
    run_wrapper cdc-replication-slot-restore.sh --slot pipeline_slot --dry-run >"$LOG" 2>&1
    local code=$?
    if [ "$code" -le 1 ] && [ "$(psql_q -c "$slots")" = 0 ]; then
        pass runbook.2.slot-restore-dry-run
    else
        fail runbook.2.slot-restore-dry-run "exit $code, or the dry run created the slot"
    fi
    run_wrapper cdc-replication-slot-restore.sh --slot pipeline_slot --force --yes \
        --report-file "$WORK/db/lost-slot-report.json" >"$LOG" 2>&1
    code=$?
    if [ "$code" -le 1 ] && [ "$(psql_q -c "$slots")" = 1 ] &&
        grep -q '"pipeline_slot"' "$WORK/db/lost-slot-report.json"; then
        pass runbook.2.lost-slot-restore
    else
        fail runbook.2.lost-slot-restore "exit $code; the slot is not back, or no report naming it"
    fi
}

# Metric names promtool's linter may object to but that are accepted anyway (none at present:
# keep this empty, rename the metric instead). Any other lint problem fails.
KNOWN_LINT=()

# promtool check metrics on what the tools wrote (exit 1: not valid exposition format, always a
# failure; exit 3: lint problems), and every metric the alert rules read exists.
check_metrics() {
    local file name line code unknown
    for file in pipeline-backup.prom cdc-slots.prom; do
        if [ ! -s "$WORK/backups/metrics/$file" ]; then
            : >"$LOG"
            fail "metrics.promtool.$file" "the tool wrote no $file"
            continue
        fi
        promtool check metrics <"$WORK/backups/metrics/$file" >"$LOG" 2>&1
        code=$?
        unknown=0
        if [ "$code" = 3 ]; then
            while read -r line; do
                [[ " ${KNOWN_LINT[*]} " == *" ${line%% *} "* ]] || unknown=1
            done <"$LOG"
        fi
        if [ "$code" = 0 ] || { [ "$code" = 3 ] && [ "$unknown" = 0 ]; }; then
            pass "metrics.promtool.$file"
            [ "$code" = 0 ] || sed 's/^/    known lint: /' "$LOG"
        else
            fail "metrics.promtool.$file" "promtool check metrics exit $code"
        fi
    done
    local missing=()
    # shellcheck disable=SC2013 # metric names are words
    for name in $(grep -oE '\b(pipeline_backup|cdc_slot)_[a-z_]+' "$DEPLOY/alert-rules.yaml" | sort -u); do
        grep -q -h "^${name}[{ ]" "$WORK"/backups/metrics/*.prom 2>/dev/null || missing+=("$name")
    done
    if [ ${#missing[@]} = 0 ]; then
        pass metrics.alert-rule-names
    else
        : >"$LOG"
        fail metrics.alert-rule-names "alert rules read metrics no tool wrote: ${missing[*]}"
    fi
}

# Runbook scenario 1, PostgreSQL corruption: point-in-time restore to a new data directory,
# then the saved slots recreated on the restored server.
check_runbook_pitr() {
    local target port restored
    psql_q -c "INSERT INTO orders VALUES (5000, 'before the disaster')" >>"$LOG" 2>&1
    target=$(psql_q -c "SELECT now()")
    sleep 1
    # The disaster, committed and archived (recovery stops at the first commit past the target).
    psql_q -c "DELETE FROM orders" >>"$LOG" 2>&1
    switch_wal_and_wait
    port=$(free_port)
    restored=$WORK/db/restored
    if run_wrapper postgresql-pitr-restore.sh --pgdata "$restored" --target-time "$target" \
        --start --port "$port" --socket-dir "$WORK/sock" --yes >"$LOG" 2>&1; then
        SERVERS+=("$restored")
        local rows
        # Everything up to the target (1100 rows and the last one), nothing of the DELETE.
        rows=$(PGPORT=$port psql_q -c "SELECT count(*) FROM orders" 2>>"$LOG")
        if [ "$rows" = 1101 ]; then
            pass runbook.1.pitr-restore
        else
            fail runbook.1.pitr-restore "the restored server holds $rows rows, not the 1101 of the target time"
        fi
    else
        fail runbook.1.pitr-restore "postgresql-pitr-restore.sh failed"
        return
    fi
    local slots="SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pipeline_slot'"
    PGPORT=$port run_wrapper cdc-replication-slot-restore.sh --dry-run >"$LOG" 2>&1
    local code=$?
    if [ "$code" -le 1 ] && [ "$(PGPORT=$port psql_q -c "$slots")" = 0 ]; then
        pass runbook.1.slot-restore-dry-run
    else
        fail runbook.1.slot-restore-dry-run "exit $code, or the dry run created the slot"
    fi
    # Exit 1 is expected here: the report says which changes the new slot cannot stream.
    PGPORT=$port run_wrapper cdc-replication-slot-restore.sh --yes \
        --report-file "$WORK/db/slot-restore-report.json" >"$LOG" 2>&1
    code=$?
    if [ "$code" -le 1 ] && [ "$(PGPORT=$port psql_q -c "$slots")" = 1 ] &&
        grep -q '"pipeline_slot"' "$WORK/db/slot-restore-report.json" &&
        "$VENV/bin/python" -c 'import json,sys; json.load(open(sys.argv[1]))' \
            "$WORK/db/slot-restore-report.json" 2>>"$LOG"; then
        pass runbook.1.slot-restore
    else
        fail runbook.1.slot-restore "exit $code; the slot is not back, or no JSON report naming it"
    fi
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(manifests alerts image wrappers docs real kafka)
# Runbook scenario 4, the schema registry's `_schemas` topic lost: the backup CronJobs' commands,
# the topic deleted, the runbook's replay; records and topic configs must come back as they were.
# Then scenario 3's time-range replay into a side topic.
check_runbook_schemas() {
    local broker=${PIPELINE_BACKUP_TEST_KAFKA:-}
    if [ -z "$broker" ]; then
        skip runbook.4 "no test broker (PIPELINE_BACKUP_TEST_KAFKA; scripts/services.sh start)"
        return
    fi
    if [ ! -x "$BIN_DIR/kafka-topic-backup" ] || [ ! -x "$BIN_DIR/kafka-replay" ]; then
        : >"$LOG"
        fail runbook.4 "kafka-topic-backup and kafka-replay are not built in $BIN_DIR"
        return
    fi
    local fixture=("$VENV/bin/python" "$DEPLOY/kafka_fixture.py" "$broker")
    # A name of its own on the shared broker, with the registry's leading underscore.
    local topic="_schemas_check_$$_$RANDOM"
    db_dir "$WORK/kafka-repo" || exit 2
    if ! "${fixture[@]}" create "$topic" >"$LOG" 2>&1 ||
        ! "${fixture[@]}" dump "$topic" >"$WORK/before.jsonl" 2>>"$LOG" ||
        ! "${fixture[@]}" describe "$topic" >"$WORK/before.json" 2>>"$LOG"; then
        fail runbook.4.fixture "cannot create the $topic topic"
        return
    fi
    KAFKA_BOOTSTRAP_SERVERS=$broker BACKUP_DIR=$WORK/kafka-repo \
        check runbook.4.backup run_wrapper kafka-topic-backup.sh --topic "$topic"
    # The weekly and the daily incremental CronJobs' commands, their topic expression narrowed
    # to this topic; the replay below then goes through the incremental chain.
    local name
    for name in kafka kafka-incremental; do
        KAFKA_BOOTSTRAP_SERVERS=$broker BACKUP_DIR=$WORK/kafka-repo KAFKA_BACKUP_TOPICS="^$topic\$" \
            run_cronjob "pipeline-backup-$name"
    done
    check runbook.4.topic-lost "${fixture[@]}" delete "$topic"
    KAFKA_BOOTSTRAP_SERVERS=$broker BACKUP_DIR=$WORK/kafka-repo \
        check runbook.4.replay run_wrapper kafka-topic-replay.sh --topic "$topic"
    "${fixture[@]}" dump "$topic" >"$WORK/after.jsonl" 2>"$LOG"
    "${fixture[@]}" describe "$topic" >"$WORK/after.json" 2>>"$LOG"
    if [ -s "$WORK/before.jsonl" ] && cmp -s "$WORK/before.jsonl" "$WORK/after.jsonl" &&
        cmp -s "$WORK/before.json" "$WORK/after.json"; then
        pass runbook.4.records-and-configs
    else
        diff "$WORK/before.json" "$WORK/after.json" >>"$LOG"
        diff "$WORK/before.jsonl" "$WORK/after.jsonl" | head -20 >>"$LOG"
        fail runbook.4.records-and-configs "the replayed topic differs from the lost one"
    fi
    # Scenario 3's time-range replay into a side topic: exactly the records of [from, to).
    local ranged="${topic}_range"
    KAFKA_BOOTSTRAP_SERVERS=$broker BACKUP_DIR=$WORK/kafka-repo \
        check runbook.3.time-range-replay run_wrapper kafka-topic-replay.sh --topic "$topic" \
        --from-time 2023-11-14T22:13:31Z --to-time 2023-11-14T22:13:41Z --target-topic "$ranged"
    "${fixture[@]}" dump "$ranged" >"$WORK/ranged.jsonl" 2>"$LOG"
    if "$VENV/bin/python" - "$WORK/before.jsonl" "$WORK/ranged.jsonl" >>"$LOG" 2>&1 <<'EOF'
import json, sys
fields = lambda r: (r["key"], r["value"], r["headers"], r["timestamp"])
source = [json.loads(l) for l in open(sys.argv[1])]
# 2023-11-14T22:13:31Z .. 22:13:41Z in epoch milliseconds: the fixture's records 11 to 20.
wanted = [fields(r) for r in source if 1_700_000_011_000 <= r["timestamp"][1] < 1_700_000_021_000]
got = [fields(json.loads(l)) for l in open(sys.argv[2])]
print(f"wanted {len(wanted)} records, got {len(got)}")
sys.exit(0 if len(wanted) == 10 and got == wanted else 1)
EOF
    then
        pass runbook.3.time-range-records
    else
        fail runbook.3.time-range-records "the side topic does not hold exactly the records in range"
    fi
    "${fixture[@]}" delete "$ranged" >/dev/null 2>&1
    "${fixture[@]}" delete "$topic" >/dev/null 2>&1
}

# Every command of our tools in the runbook parses (flags, subcommands, values) with the
# built binaries; a planted unknown flag must be caught.
check_runbook_commands() {
    local code line error
    # shellcheck disable=SC2016 # the backquotes are Markdown
    printf '```sh\npitr-restore --target-tiem 2026-11-21T01:55:00Z\n```\n' >"$WORK/bad-runbook.md"
    "$VENV/bin/python" "$DEPLOY/runbook_commands.py" "$WORK/bad-runbook.md" "$BIN_DIR" \
        "$DEPLOY/wrappers" >"$LOG" 2>&1
    if [ "$(cut -f1 "$LOG")" = 2 ]; then
        pass runbook.commands.rejects-bad-flag
    else
        fail runbook.commands.rejects-bad-flag "a misspelt flag was not refused"
    fi
    "$VENV/bin/python" "$DEPLOY/runbook_commands.py" "$ROOT/docs/runbook.md" "$BIN_DIR" \
        "$DEPLOY/wrappers" >"$WORK/runbook-commands.tsv" 2>"$LOG" ||
        { fail runbook.commands "cannot read docs/runbook.md"; return; }
    while IFS=$'\t' read -r code line error; do
        line=${line%%#*}
        line=${line%"${line##*[![:space:]]}"}
        if [ "$code" = 0 ]; then
            pass "runbook.command: $line"
        else
            echo "$error" >"$LOG"
            fail "runbook.command: $line" "exit $code"
        fi
    done <"$WORK/runbook-commands.tsv"
}

install_tools
for section in "${sections[@]}"; do
    case $section in
        manifests) check_manifests ;;
        alerts) check_alert_rules ;;
        image) check_containerfile ;;
        wrappers) check_wrappers ;;
        real) check_real_runs ;;
        docs) check_runbook_commands ;;
        kafka) check_runbook_schemas ;;
        *) echo "check: unknown section '$section' (manifests alerts image wrappers docs real kafka)" >&2; exit 2 ;;
    esac
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
