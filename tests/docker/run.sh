#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/docker/run.sh - the real run of roster's Compose HA example, its
# image and its Debian package, on Docker from Debian's packages. Every
# service runs with network_mode: host on 127.0.0.1 ports: no test traffic
# leaves loopback. Steps (each timed):
#
#   deps       installs what is missing: docker.io, docker-compose,
#              debootstrap, yamllint
#   lint       yamllint (tests/yamllint.yml) and `docker-compose
#              config` of every combination of the Compose files
#   dockerd    starts dockerd when none answers (stopped by its pid at the
#              end); a running one is used and left alone
#   base       the debian:12 image: debootstrap --variant=minbase bookworm
#              from this machine's apt source, docker import; skipped when
#              debian:12 exists, from the cached tarball when there is one
#              ($ROSTER_DOCKER_CACHE, default /var/cache/roster-test)
#   build      roster:local from compose/Dockerfile, the test MariaDB from
#              tests/docker/mariadb.Dockerfile
#   compose    tests/docker/test_compose.py: --check of every roster command
#              line of the Compose files, then compose/ha-cluster.yml with
#              tests/docker/compose.test.yml: up, healthy, chat (plain,
#              streamed) and embeddings through the apiserver and the
#              webserver, model list, a controller killed and restarted,
#              down -v leaving nothing behind
#   deb        the image's .deb on a clean debian:12 (tests/docker/
#              deb-check.sh): apt-get install ./roster_*.deb, roster
#              --version, a role started from it, systemd-analyze verify of
#              its units, apt-get purge
#   size       the image's size and its layers
#
# Usage: tests/docker/run.sh [STEP...]   (as root, or with passwordless sudo)
#   STEP...: only these of lint, base, build, compose, deb, size (deps and
#   dockerd always run; compose, deb and size need the images of build).
# Environment: ROSTER_DOCKER_CACHE (the base image's tarball cache),
# ROSTER_DOCKER_KEEP=1 (leave the HA project running after the compose
# step, and the dockerd this script started, for a look; the script says
# how to remove them), ROSTER_DOCKER_SAVE=PATH (docker save the image to
# PATH after the build: tests/k8s loads it with ROSTER_K8S_IMAGE_ARCHIVE),
# TMPDIR.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd -P)
here=$root/tests/docker
cache=${ROSTER_DOCKER_CACHE:-/var/cache/roster-test}
base_tar=$cache/debian-12-minbase.tar
image=roster:local
db_image=roster-test-mariadb:local
DOCKERD_TIMEOUT_S=60

# Debian's docker client (the daemon's version), not another one earlier in PATH
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
# the classic builder: BuildKit is not part of Debian's docker.io 20.10
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

steps=" ${*:-lint base build compose deb size} "
for s in $steps; do
    case "$s" in
    lint | base | build | compose | deb | size) ;;
    *) echo "usage: $0 [lint|base|build|compose|deb|size]..." >&2; exit 64 ;;
    esac
done
wants() { [[ "$steps" == *" $1 "* ]]; }

start=$(date +%s)
step_start=$start
step_name=""
times=()
step() {
    local now
    now=$(date +%s)
    if [ -n "$step_name" ]; then
        times+=("$(printf '%-10s %4ds' "$step_name" $((now - step_start)))")
    fi
    step_name=$1
    step_start=$now
    [ "$1" = end ] || printf '\n==> docker: %s (%ds)\n' "$*" $((now - start))
}
die() {
    echo "tests/docker/run.sh: $*" >&2
    exit 1
}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/roster-docker.XXXXXX")
# an empty env file for docker-compose: a developer's compose/.env must
# not change what is tested
noenv=$tmp/empty.env
: >"$noenv"
dockerd_pid=""
cleanup() {
    local rc=$?
    if [ -n "$dockerd_pid" ] && [ "${ROSTER_DOCKER_KEEP:-0}" = 1 ]; then
        echo "tests/docker/run.sh: ROSTER_DOCKER_KEEP=1: dockerd (pid $dockerd_pid) left running" >&2
    elif [ -n "$dockerd_pid" ]; then
        echo "tests/docker/run.sh: stopping the dockerd it started (pid $dockerd_pid)" >&2
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            echo "tests/docker/run.sh: dockerd ignored SIGTERM for 30 s: SIGKILL" >&2
            kill -KILL "$dockerd_pid" 2>/dev/null || true
        fi
    fi
    if [ "$rc" -ne 0 ] && [ -f "$tmp/dockerd.log" ]; then
        echo "tests/docker/run.sh: dockerd's log: last lines" >&2
        tail -n 20 "$tmp/dockerd.log" >&2 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- deps ---------------------------------------------------------------------------------------
step deps
want=(docker.io docker-compose debootstrap yamllint python3 python3-yaml)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/docker/run.sh: installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
docker-compose version --short >/dev/null || die "docker-compose does not run"

# ---- lint ---------------------------------------------------------------------------------------
if wants lint; then
    step lint
    yamllint --strict -c "$here/../yamllint.yml" "$root"/compose/*.yml "$here"/*.yml
    echo "yamllint: compose/*.yml tests/docker/*.yml well-formed"
    # every combination resolves (interpolation, merge keys, the override's
    # paths), with placeholder secrets
    lint_env=(ROSTER_CLUSTER_SECRET=lint-secret ROSTER_REGISTRY_DB_PASSWORD=lint-password)
    for files in "ha-cluster.yml" "ha-cluster.yml ha-builtin.yml"; do
        args=()
        for f in $files; do args+=(-f "$root/compose/$f"); done
        env "${lint_env[@]}" docker-compose --env-file "$noenv" "${args[@]}" config -q
        echo "docker-compose config: $files"
    done
    env "${lint_env[@]}" OPENAI_API_KEY=lint-key docker-compose --env-file "$noenv" \
        -f "$root/compose/ha-cluster.yml" -f "$here/compose.test.yml" config -q
    echo "docker-compose config: ha-cluster.yml tests/docker/compose.test.yml"
    # and without either secret, Compose refuses to go on and names it
    for secret in ROSTER_CLUSTER_SECRET ROSTER_REGISTRY_DB_PASSWORD; do
        if env -u "$secret" "${lint_env[@]/#$secret=*/LINT_UNSET=1}" docker-compose --env-file "$noenv" \
            -f "$root/compose/ha-cluster.yml" config -q 2>"$tmp/err"; then
            die "docker-compose config accepted ha-cluster.yml without $secret"
        fi
        grep -q "set $secret in compose/.env" "$tmp/err" || die "no word of $secret: $(cat "$tmp/err")"
    done
    echo "docker-compose config: refuses to go on without ROSTER_CLUSTER_SECRET or ROSTER_REGISTRY_DB_PASSWORD"
fi

# ---- dockerd ------------------------------------------------------------------------------------
step dockerd
if docker info >/dev/null 2>&1; then
    echo "dockerd already running: using it (and leaving it running)"
else
    echo "starting dockerd (log: $tmp/dockerd.log)"
    # in a session of its own: a Ctrl-C of this script reaches it through
    # the cleanup, in order. No default bridge, no iptables rules, no IP
    # forwarding: everything here runs on the host's network, and the
    # machine's network is left as it was.
    setsid dockerd --bridge=none --iptables=false --ip-forward=false >"$tmp/dockerd.log" 2>&1 </dev/null &
    dockerd_pid=$!
    deadline=$((SECONDS + DOCKERD_TIMEOUT_S))
    until docker info >/dev/null 2>&1; do
        kill -0 "$dockerd_pid" 2>/dev/null || { dockerd_pid=""; die "dockerd exited during start-up"; }
        [ "$SECONDS" -lt "$deadline" ] || die "dockerd did not answer within ${DOCKERD_TIMEOUT_S}s"
        sleep 0.2
    done
fi
docker version --format 'docker: client {{.Client.Version}}, server {{.Server.Version}}'

# ---- base ---------------------------------------------------------------------------------------
# The mirror of this machine's apt configuration for bookworm (deb822 or
# one-line format), for debootstrap.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                 uris = ""; suites = ""; types = ""
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^URIs:/) uris = substr($i, 6)
                     if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
                     if ($i ~ /^Types:/) types = " " substr($i, 7) " "
                 }
                 if (types ~ / deb / && suites ~ / bookworm /) { split(uris, u, " "); print u[1]; exit }
             }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" && $0 !~ /\[/ && $3 == "bookworm" { print $2; exit }
             $1 == "deb" && $0 ~ /\[/ { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) break;
                                        if ($(i + 2) == "bookworm") { print $(i + 1); exit } }' "$f"
    done
}

if wants base; then
    step base
    if docker image inspect debian:12 >/dev/null 2>&1; then
        echo "debian:12 present: $(docker image inspect -f '{{.Id}} {{.Created}}' debian:12)"
    else
        if [ ! -s "$base_tar" ]; then
            mirror=$(apt_mirror | sed -n '1s/^[[:space:]]*//p')
            mirror=${mirror%% *}
            [ -n "$mirror" ] || die "no bookworm source in /etc/apt for debootstrap"
            echo "debootstrap --variant=minbase bookworm from $mirror"
            rootfs=$tmp/rootfs
            debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
                { tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
            # this machine's apt sources (security and updates too), and none of
            # debootstrap's downloads and lists: as the official image has them
            rm -f "$rootfs/etc/apt/sources.list"
            for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
                [ -f "$f" ] || continue
                install -D -m 0644 "$f" "$rootfs$f"
            done
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
                "$rootfs"/var/log/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/debootstrap
            mkdir -p "$rootfs/var/lib/apt/lists/partial"
            $sudo mkdir -p "$cache"
            tar -C "$rootfs" --numeric-owner -cf "$base_tar.part" .
            mv "$base_tar.part" "$base_tar"
            rm -rf "$rootfs"
            echo "cached $base_tar ($(du -h "$base_tar" | cut -f1))"
        fi
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            "$base_tar" debian:12 >/dev/null
        echo "debian:12 imported from $base_tar"
    fi
fi

# ---- build --------------------------------------------------------------------------------------
if wants build; then
    step build "roster image"
    docker build --network host -f "$root/compose/Dockerfile" -t "$image" "$root" >"$tmp/build.log" 2>&1 ||
        { tail -n 40 "$tmp/build.log" >&2; die "docker build of compose/Dockerfile failed"; }
    grep -E '^Step [0-9]+/[0-9]+ : (FROM|RUN)' "$tmp/build.log" | cut -c1-100 || true
    echo "built $image"
    if [ -n "${ROSTER_DOCKER_SAVE:-}" ]; then
        docker save -o "$ROSTER_DOCKER_SAVE.part" "$image"
        mv "$ROSTER_DOCKER_SAVE.part" "$ROSTER_DOCKER_SAVE"
        echo "saved $image to $ROSTER_DOCKER_SAVE ($(du -h "$ROSTER_DOCKER_SAVE" | cut -f1))"
    fi
    step build-db "test MariaDB image"
    docker build --network host -f "$here/mariadb.Dockerfile" -t "$db_image" "$here" >"$tmp/build-db.log" 2>&1 ||
        { tail -n 40 "$tmp/build-db.log" >&2; die "docker build of tests/docker/mariadb.Dockerfile failed"; }
    echo "built $db_image"
fi

# ---- compose ------------------------------------------------------------------------------------
if wants compose; then
    step compose
    keep=()
    [ "${ROSTER_DOCKER_KEEP:-0}" != 1 ] || keep=(--keep)
    python3 "$here/test_compose.py" --image "$image" "${keep[@]}"
fi

# ---- deb ----------------------------------------------------------------------------------------
if wants deb; then
    step deb
    # the .deb out of the build stage (cached: no rebuild)
    docker build --network host -f "$root/compose/Dockerfile" --target build -t roster:build "$root" >"$tmp/build-stage.log" 2>&1 ||
        { tail -n 20 "$tmp/build-stage.log" >&2; die "docker build --target build failed"; }
    mkdir -p "$tmp/deb"
    ctr=$(docker create --network none roster:build)
    docker cp "$ctr:/out/." "$tmp/deb/"
    docker rm "$ctr" >/dev/null
    deb=$(cd "$tmp/deb" && ls roster_*.deb)
    echo "package: $deb ($(du -h "$tmp/deb/$deb" | cut -f1))"
    docker run --rm --network host -v "$tmp/deb:/deb:ro" -v "$here/deb-check.sh:/deb-check.sh:ro" \
        debian:12 bash /deb-check.sh "/deb/$deb"
fi

# ---- size ---------------------------------------------------------------------------------------
if wants size; then
    step size
    docker image inspect -f "$image: {{.Size}} bytes" "$image" |
        awk '{ printf "%s %s (%.1f MB)\n", $1, $2, $2 / 1e6 }'
    docker image inspect -f "debian:12: {{.Size}} bytes" debian:12 |
        awk '{ printf "%s %s (%.1f MB)\n", $1, $2, $2 / 1e6 }'
    docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | cut -c1-110 | head -n 12
    echo "packages the image adds to debian:12 (installed size):"
    docker run --rm --network none --entrypoint sh "$image" -c \
        "dpkg-query -W -f='\${Installed-Size}\t\${Package}\n'" >"$tmp/pkgs-image"
    docker run --rm --network none debian:12 sh -c \
        "dpkg-query -W -f='\${Package}\n'" >"$tmp/pkgs-base"
    awk -F'\t' 'NR == FNR { base[$1] = 1; next } !($2 in base)' "$tmp/pkgs-base" "$tmp/pkgs-image" |
        sort -rn | awk -F'\t' '{ t += $1; printf "  %6d KiB  %s\n", $1, $2 } END { printf "  %6d KiB  in all\n", t }'
fi

step end
echo
echo "==> docker: times"
printf '  %s\n' "${times[@]}"
printf '  %-10s %4ds\n' total $(($(date +%s) - start))
echo "docker: all passed"
