#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/fuzz/run.sh - runs every libFuzzer target for N seconds (default 60).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Builds build-fuzz (clang, -DROSTER_FUZZ=ON, ASan+UBSan) if it is not
# there, then runs the targets, ROSTER_FUZZ_JOBS of them at a time (default:
# the number of CPUs; CI runs two at once on its two cores), each over its
# checked-in corpus plus a scratch corpus in build-fuzz/fuzz-work/<target>/
# (new inputs go there, never into tests/fuzz/corpus: copy the interesting
# ones by hand, and a reproducer of every fixed find). Prints libFuzzer's
# "Done N runs" line per target. Exits 1 if any target crashed, leaked, hung,
# ran out of memory or hit undefined behaviour; for each, the end of its log
# and the input that did it (build-fuzz/fuzz-work/<target>/crash-*, leak-*,
# timeout-*, oom-*), printed as bytes, so that a CI log alone reproduces it:
# save the input and run build-fuzz/tests/fuzz_<target> FILE (or the replay
# runner of any build, build/tests/fuzz_replay_<target> FILE).
#
# Environment: ROSTER_FUZZ_BUILD (build dir), ROSTER_FUZZ_TARGETS (subset,
# space-separated), ROSTER_FUZZ_JOBS (targets at once), ROSTER_FUZZ_ARGS
# (extra libFuzzer flags).
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ROSTER_FUZZ_BUILD:-$root/build-fuzz}
targets=${ROSTER_FUZZ_TARGETS:-"json query instance netaddr http upstream sse dbgpt flags"}
jobs=${ROSTER_FUZZ_JOBS:-$(nproc)}

if [ ! -f "$build/CMakeCache.txt" ]; then
    CC=clang cmake -S "$root" -B "$build" -DROSTER_FUZZ=ON \
        -DROSTER_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
build_targets=""
for t in $targets; do
    build_targets="$build_targets fuzz_$t"
done
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $build_targets

# -max_len follows the caps each input meets in the service: a JSON body
# (--max_body_bytes default 64 KiB), a query string inside the request head
# (16 KiB header cap), a CIDR list from a flag, for the HTTP target two
# requests at the fuzz server's caps (4 KiB head + 8 KiB body each), a
# worker's answer as the apiserver reads it (64 KiB at a time), stretches
# of an event stream, and a command line.
max_len() {
    case $1 in
    json | instance | upstream) echo 65536 ;;
    query | http | sse | dbgpt) echo 16384 ;;
    netaddr | flags) echo 4096 ;;
    *) echo 4096 ;;
    esac
}

# Runs one target; leaves its exit status in $work/status.
run_one() {
    t=$1
    work="$build/fuzz-work/$t"
    rm -f "$work/status"
    mkdir -p "$work/corpus"
    dict=""
    if [ -f "$root/tests/fuzz/$t.dict" ]; then
        dict="-dict=$root/tests/fuzz/$t.dict"
    fi
    rc=0
    # shellcheck disable=SC2086
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/tests/fuzz_$t" -max_total_time="$secs" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $dict \
        -artifact_prefix="$work/" ${ROSTER_FUZZ_ARGS:-} \
        "$work/corpus" "$root/tests/fuzz/corpus/$t" >"$work/fuzz.log" 2>&1 || rc=$?
    echo "$rc" >"$work/status"
}

# Prints how a target ended; returns non-zero if it failed.
report() {
    t=$1
    work="$build/fuzz-work/$t"
    log="$work/fuzz.log"
    echo "== fuzz_$t (${secs}s, max_len $(max_len "$t"))"
    if [ "$(cat "$work/status" 2>/dev/null || echo 1)" = 0 ]; then
        grep -E '^Done [0-9]+ runs' "$log" || tail -n 3 "$log"
        return 0
    fi
    echo "fuzz_$t FAILED; last lines of $log:"
    tail -n 40 "$log"
    for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
        [ -f "$f" ] || continue
        echo "-- reproducer $f ($(wc -c <"$f") bytes; od -c):"
        od -An -c "$f" | head -n 60
    done
    return 1
}

failed=""
# shellcheck disable=SC2086
set -- $targets
while [ $# -gt 0 ]; do
    batch=""
    n=0
    while [ $# -gt 0 ] && [ "$n" -lt "$jobs" ]; do
        batch="$batch $1"
        rm -f "$build/fuzz-work/$1"/crash-* "$build/fuzz-work/$1"/leak-* \
            "$build/fuzz-work/$1"/timeout-* "$build/fuzz-work/$1"/oom-* 2>/dev/null || true
        run_one "$1" &
        shift
        n=$((n + 1))
    done
    wait
    for t in $batch; do
        report "$t" || failed="$failed $t"
    done
done

if [ -n "$failed" ]; then
    echo "failed:$failed"
    exit 1
fi
echo "all fuzz targets ran clean"
