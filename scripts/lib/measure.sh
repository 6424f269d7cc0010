# Shared by the Kafka benchmarks: timing and peak memory of commands, and their medians.
# Needs WORK (a scratch directory) and GNU time at /usr/bin/time.

# broker_cpu_ticks: the CPU clock ticks the local broker (BROKER_PID) has used so far.
broker_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$BROKER_PID/stat"; }

# quiesce: waits (at most 20 s) until the local broker has been idle for half a second, so a
# measurement does not pay for work the previous one left (a dropped topic's memory, its
# own background tasks). Without BROKER_PID (a remote broker), a fixed pause of one second.
quiesce() {
    if [ -z "${BROKER_PID:-}" ] || [ ! -r "/proc/$BROKER_PID/stat" ]; then
        sleep 1
        return
    fi
    local before after
    for _ in $(seq 1 40); do
        before=$(broker_cpu_ticks)
        sleep 0.5
        after=$(broker_cpu_ticks)
        # Idle: under 4% of a core (2 ticks of 100 Hz in half a second).
        [ $((after - before)) -le 2 ] && return
    done
}

# measure NAME COMMAND...: appends "wall_seconds peak_rss_kib cpu_seconds" to $WORK/NAME.
# A failed command is reported as such, and the run goes on. Each measurement starts once
# the broker is quiet (quiesce).
measure() {
    local name=$1
    shift
    quiesce
    if /usr/bin/time -f '%e %M %U %S' -o "$WORK/$name.last" "$@"; then
        awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$WORK/$name.last" >"$WORK/$name.sum"
        mv "$WORK/$name.sum" "$WORK/$name.last"
        cat "$WORK/$name.last" >>"$WORK/$name"
    else
        echo "bench: $name failed" >&2
        echo "failed failed failed" >>"$WORK/$name"
    fi
}

# median NAME FIELD: the median of column FIELD (1 seconds, 2 KiB, 3 CPU seconds) over the
# runs that worked.
median() {
    grep -v failed "$WORK/$1" | cut -d' ' -f"$2" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "failed"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# under100 MB: "ok" below the 100 MB memory goal, "MISSED" from it, "n/a" without a number.
under100() { awk -v m="$1" 'BEGIN { if (m == "-") print "n/a"; else print (m < 100 ? "ok" : "MISSED") }'; }

# peak NAME: the median peak memory in MB.
peak() { awk -v k="$(median "$1" 2)" 'BEGIN { if (k == "failed") print "-"; else printf "%.1f", k / 1024 }'; }

# paired A B: the median over runs of A's speed against B's (B's seconds / A's seconds),
# each pair measured in the same run, so drift of the machine between runs cancels out.
paired() {
    paste -d' ' "$WORK/$1" "$WORK/$2" | awk '$1 != "failed" && $4 != "failed" && $1 > 0 { print $4 / $1 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
