# Shared by the Kafka benchmarks: timing and peak memory of commands, and their medians.
# Needs WORK (a scratch directory) and GNU time at /usr/bin/time.

# measure NAME COMMAND...: appends "wall_seconds peak_rss_kib cpu_seconds" to $WORK/NAME.
# A failed command is reported as such, and the run goes on. Each measurement starts after a
# pause, so the broker has finished the work the previous one left (a dropped topic's data).
measure() {
    local name=$1
    shift
    sleep 1
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

# peak NAME: the median peak memory in MB.
peak() { awk -v k="$(median "$1" 2)" 'BEGIN { if (k == "failed") print "-"; else printf "%.1f", k / 1024 }'; }
