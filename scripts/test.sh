#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test of roster:
#   1. the release build (warnings are errors): unit, registry on SQLite and on
#      a private MariaDB, service tests (real processes over loopback), the
#      fault suite (label chaos: controllers, workers, MariaDB and a Galera
#      node killed and stopped under load), the security suite (label
#      security), replay of the fuzz corpora;
#   2. unit and SQLite registry tests, and controllers and workers under
#      fourteen service tests, in valgrind (memcheck, leaks);
#   3. the same suite built with ASan+UBSan; the unit tests and the
#      controller's, apiserver's and webserver's service tests under
#      ThreadSanitizer (scripts/tsan.sh); then every fuzz
#      target run by libFuzzer (ASan+UBSan) for 30 s, two at a time
#      (tests/fuzz/run.sh: a crash, leak or hang fails the run and prints
#      the reproducer); then `bench/run --quick`, a smoke run of every
#      benchmark script and of the report they feed (no figure asserted);
#   4. source checks: clang-format, banned functions, generated docs current;
#   5. the deployment examples run for real: the Compose HA topology on Docker
#      (the image built from compose/Dockerfile on a debootstrapped debian:12,
#      controllers killed under load, the .deb on a clean Debian 12), then
#      the Kubernetes manifests played with podman.
# Usage: scripts/test.sh [--quick]   (--quick: steps 1 and 4 only)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

scripts/deps.sh test
jobs=$(nproc)
start=$(date +%s)

step() { printf '\n==> %s (%ds)\n' "$*" $(( $(date +%s) - start )); }

step "release build"
cmake -S . -B build -DROSTER_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
step "release tests"
(cd build && ctest -j"$jobs" --output-on-failure --timeout 600)

if [ "$quick" -eq 0 ]; then
    # valgrind: the unit and SQLite registry suites, and the controller
    # itself under the service tests that do not depend on timing margins
    step "valgrind"
    vg="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect"
    for t in build/tests/test_*; do
        case "$t" in *test_registry) continue ;; esac
        $vg "$t" >/dev/null
    done
    $vg build/tests/test_registry sqlite >/dev/null
    # (ctest starts the MariaDB fixture; the tests skipped here bound times
    # (leases of 0.5 s, cancellation within 1 s, refusals within 0.5 s) too
    # tightly for valgrind's slowdown; the ASan pass runs them)
    (cd build && ROSTER_TEST_WRAPPER="$vg" ROSTER_TEST_SKIP=failover,cancelled,back_pressure,queue_wait,weights,kill9,sigstop,within_a_second,disconnect,10k,dashboard_stream,action_in_flight,limits_cluster_wide \
        ctest --output-on-failure --timeout 600 \
        -R '^(test_smoke|test_api|test_bad_input|test_watch|test_auth|test_cli|test_cli_chat|test_dbgpt_client|test_worker|test_backends|test_apiserver|test_webserver|test_start_errors|test_settings)$')

    step "ASan+UBSan build"
    cmake -S . -B build-asan -DROSTER_WERROR=ON -DROSTER_SANITIZE=address,undefined \
        -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build build-asan -j"$jobs"
    step "ASan+UBSan tests"
    # (the Galera test runs in the release pass only: its time is the
    # cluster's start-up, and the controller's MySQL paths it drives run
    # under ASan in test_ha, test_db_outage and the fault suite)
    (cd build-asan && ctest -j"$jobs" --output-on-failure --timeout 900 -E '^(galera_start|galera_stop|test_galera)$')

    step "ThreadSanitizer: unit tests, controller, apiserver and webserver"
    scripts/tsan.sh

    step "fuzzing: every target for 30 s, two at a time"
    ROSTER_FUZZ_JOBS=2 tests/fuzz/run.sh 30

    # the benchmark scripts still work (no figure is asserted: speed is
    # measured by `bench/run`, never by a test); report under build-bench/quick
    step "benchmarks: bench/run --quick (smoke)"
    bench/run --quick --bin build/roster
fi

step "source checks"
scripts/check-source.sh build/roster

if [ "$quick" -eq 0 ]; then
    image_archive=/var/cache/roster-test/roster-local.tar
    mkdir -p /var/cache/roster-test
    step "deployment: Compose HA, the image and the .deb on Docker"
    ROSTER_DOCKER_SAVE=$image_archive tests/docker/run.sh
    step "deployment: the Kubernetes manifests on podman"
    ROSTER_BIN=build/roster ROSTER_K8S_IMAGE_ARCHIVE=$image_archive \
        python3 tests/k8s/test_k8s_podman.py
fi
step "all tests passed"
