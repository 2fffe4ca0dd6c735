#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/fuzz/run.sh - runs every libFuzzer target for N seconds (default 60).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Builds build-fuzz (clang, -DROSTER_FUZZ=ON, ASan+UBSan) if it is not
# there, then runs each target in turn over its checked-in corpus plus a
# scratch corpus in build-fuzz/fuzz-work/<target>/ (new inputs go there,
# never into tests/fuzz/corpus: copy the interesting ones by hand).
# Prints libFuzzer's "Done N runs" line per target. Exits 1 if any target
# crashed, leaked, hung or hit undefined behaviour; the input that did it
# is left in build-fuzz/fuzz-work/<target>/ (crash-*, leak-*, timeout-*).
#
# Environment: ROSTER_FUZZ_BUILD (build dir), ROSTER_FUZZ_TARGETS (subset,
# space-separated), ROSTER_FUZZ_ARGS (extra libFuzzer flags).
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${ROSTER_FUZZ_BUILD:-$root/build-fuzz}
targets=${ROSTER_FUZZ_TARGETS:-"json query instance netaddr http"}

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
# (16 KiB header cap), a CIDR list from a flag, and for the HTTP target two
# requests at the fuzz server's caps (4 KiB head + 8 KiB body each).
max_len() {
    case $1 in
    json | instance) echo 65536 ;;
    query | http) echo 16384 ;;
    netaddr) echo 4096 ;;
    *) echo 4096 ;;
    esac
}

failed=""
for t in $targets; do
    work="$build/fuzz-work/$t"
    mkdir -p "$work/corpus"
    dict=""
    if [ -f "$root/tests/fuzz/$t.dict" ]; then
        dict="-dict=$root/tests/fuzz/$t.dict"
    fi
    log="$work/fuzz.log"
    echo "== fuzz_$t (${secs}s, max_len $(max_len "$t"))"
    # shellcheck disable=SC2086
    if ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/tests/fuzz_$t" -max_total_time="$secs" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $dict \
        -artifact_prefix="$work/" ${ROSTER_FUZZ_ARGS:-} \
        "$work/corpus" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$log" || tail -n 3 "$log"
    else
        echo "fuzz_$t FAILED; last lines of $log:"
        tail -n 40 "$log"
        ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null || true
        failed="$failed $t"
    fi
done

if [ -n "$failed" ]; then
    echo "failed:$failed"
    exit 1
fi
echo "all fuzz targets ran clean"
