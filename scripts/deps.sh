#!/usr/bin/env bash
# Installs what roster needs on Debian 12, and nothing when it is all there.
#   scripts/deps.sh build   compilers and libraries, and dpkg-dev for `cpack -G DEB` (default)
#   scripts/deps.sh test    + MariaDB server, galera-4 and rsync (the three-node Galera
#                           cluster of test_galera), python3, faketime, valgrind, clang (fuzzing),
#                           systemd (systemd-analyze verify of the units), man-db and
#                           groff-base (the man page renders),
#                           Chromium (the dashboard's browser test), the openai and
#                           playwright-core npm packages for the real-client and browser tests,
#                           and what the deployment tests run: Docker and docker-compose,
#                           debootstrap (the debian:12 base image), podman with runc and
#                           catatonit (the Kubernetes manifests played), kubectl (kustomize),
#                           yamllint, and the kubernetes-models npm package;
#                           prometheus (promtool: the alert rules' checks);
#                           for `bench/run --quick`, wrk, nginx and gnuplot
#   scripts/deps.sh bench   + wrk and nginx (the baseline the benchmarks compare against)
#                           and gnuplot (the charts)
# Needs root (or passwordless sudo). Safe to run any number of times.
set -euo pipefail

mode=${1:-build}
build=(build-essential cmake pkg-config libevent-dev default-libmysqlclient-dev libsqlite3-dev
       libcurl4-openssl-dev libcjson-dev libhttp-parser-dev dpkg-dev)
test=(mariadb-server mariadb-client galera-4 rsync python3 faketime curl valgrind clang libclang-rt-14-dev
      clang-format chromium systemd man-db groff-base
      docker.io docker-compose debootstrap yamllint python3-yaml podman runc catatonit
      prometheus wrk nginx-light gnuplot-nox)
bench=(wrk nginx-light mariadb-server mariadb-client curl python3 gnuplot-nox)

case "$mode" in
build) want=("${build[@]}") ;;
test) want=("${build[@]}" "${test[@]}") ;;
bench) want=("${build[@]}" "${bench[@]}") ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 64 ;;
esac

# Security floors (docs/operations.md): libevent's 2026 HTTP fixes, cJSON's
# and libcurl's Debian security updates.
floors=("libevent-2.1-7:2.1.12-stable-8+deb12u1" "libcjson1:1.7.15-1+deb12u4")

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

installed_version() {
    { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
        awk '$1=="install" && $3=="installed" {print $4}'
}

missing=()
# kubectl: any will do (kustomize is built in); Debian's is kubernetes-client,
# which conflicts with other kubectl packages a machine may carry
if [ "$mode" = test ] && ! command -v kubectl >/dev/null; then
    want+=(kubernetes-client)
fi
for p in "${want[@]}"; do
    [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
for f in "${floors[@]}"; do
    pkg=${f%%:*}
    min=${f#*:}
    have=$(installed_version "$pkg")
    if [ -z "$have" ] || dpkg --compare-versions "$have" lt "$min"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

for f in "${floors[@]}"; do
    pkg=${f%%:*}
    min=${f#*:}
    have=$(installed_version "$pkg")
    if [ -z "$have" ] || dpkg --compare-versions "$have" lt "$min"; then
        echo "deps: $pkg is ${have:-missing}; roster needs >= $min (apt-get upgrade)" >&2
        exit 69
    fi
done

# The real-client tests run the official openai npm package, the browser
# test playwright-core driving Debian's Chromium (both pinned in
# tests/node/package-lock.json; playwright never downloads a browser here).
if [ "$mode" = test ]; then
    if ! command -v npm >/dev/null; then
        echo "deps: installing nodejs npm" >&2
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -q >/dev/null
        $sudo apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
    fi
    node_dir="$(dirname "$0")/../tests/node"
    if [ ! -f "$node_dir/node_modules/openai/package.json" ] ||
        [ ! -f "$node_dir/node_modules/playwright-core/package.json" ]; then
        echo "deps: npm ci in tests/node" >&2
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
    k8s_dir="$(dirname "$0")/../tests/k8s"
    if [ ! -f "$k8s_dir/node_modules/kubernetes-models/package.json" ]; then
        echo "deps: npm ci in tests/k8s" >&2
        (cd "$k8s_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
fi
