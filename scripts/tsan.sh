#!/usr/bin/env bash
# ThreadSanitizer (issue 11): builds build-tsan with -DROSTER_SANITIZE=thread
# and runs the unit tests, the controller's service tests (the MariaDB
# fixture starts for test_ha and test_db_outage) and the apiserver's and
# webserver's in it. tests/tsan.supp holds the one suppression (libevent's
# deferred epoll_ctl after a close, and why it is harmless). A race report makes the process exit non-zero (ctest's
# TSAN_OPTIONS has halt_on_error=1) and the harness also fails a test whose
# process logged "WARNING: ThreadSanitizer", so any report fails the run.
#
#   scripts/tsan.sh            (about 10 min from scratch on 2 cores, of
#                               which the tests take about 1.5 min)
#
# TSan cannot be combined with ASan (ROSTER_SANITIZE=address,undefined is
# the other build, build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${ROSTER_JOBS:-$(nproc)}
cmake -S . -B build-tsan -DROSTER_WERROR=ON -DROSTER_SANITIZE=thread \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-tsan -j"$jobs"
cd build-tsan
ctest --output-on-failure --timeout 600 -L unit
ctest --output-on-failure --timeout 600 \
    -R '^(test_smoke|test_api|test_bad_input|test_watch|test_ha|test_db_outage|test_ctl_limits)$'
# the apiserver's threads (settings, limiter, probes, dashboard feed) beside
# its loops, and the webserver's whole system in one process; two at a time
ctest -j2 --output-on-failure --timeout 600 \
    -R '^(test_apiserver|test_webserver|test_settings|test_alias|test_probe|test_queue)$'
