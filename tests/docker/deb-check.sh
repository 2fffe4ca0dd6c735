#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/docker/deb-check.sh DEB - run by tests/docker/run.sh as root in a
# clean debian:12 container (host network, for apt): installs roster's .deb
# as a user would (apt-get install ./roster_*.deb, which brings the
# dependencies from Debian), runs it, checks where its files went, has
# systemd-analyze verify its units, and removes it again.
set -euo pipefail
deb=$1
export DEBIAN_FRONTEND=noninteractive
ok() { echo "ok   $*"; }

apt-get update -q >/dev/null
cd "$(dirname "$deb")"
apt-get install -y -q --no-install-recommends "./$(basename "$deb")" >/tmp/install.log 2>&1 ||
    { cat /tmp/install.log; exit 1; }
ok "apt-get install ./$(basename "$deb"): $(grep -c '^Setting up' /tmp/install.log) packages set up"

version=$(roster --version)
[ -n "$version" ] || { echo "roster --version printed nothing" >&2; exit 1; }
ok "roster --version: $version"
dpkg-query -W -f='${Version}\n' roster | grep -q . || exit 1

for f in /usr/bin/roster /usr/share/man/man1/roster.1.gz /etc/roster/controller.env.example \
    /usr/share/roster/sql/mysql/0001_dbgpt_registry.sql /usr/share/doc/roster/README.md; do
    [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
units=(/lib/systemd/system/roster-{controller,worker,apiserver,webserver}@.service)
for u in "${units[@]}"; do
    [ -f "$u" ] || { echo "missing: $u" >&2; exit 1; }
done
ok "the binary, man page, 4 units, example env files, migrations and docs are in place"
# a role starts from the package: the whole system in one process, asked
# for its health with the package's own probe, then stopped
cd /tmp
roster start webserver --host 127.0.0.1 --port 0 --port_file /tmp/port --data_dir /tmp/data \
    >/tmp/webserver.log 2>&1 &
pid=$!
for _ in $(seq 300); do
    [ -s /tmp/port ] && break
    kill -0 "$pid" 2>/dev/null || { cat /tmp/webserver.log; exit 1; }
    sleep 0.1
done
port=$(cat /tmp/port)
for _ in $(seq 100); do
    roster health --url "http://127.0.0.1:$port/api/health" >/dev/null 2>&1 && break
    sleep 0.1
done
roster health --url "http://127.0.0.1:$port/api/health" >/dev/null
kill -TERM "$pid"
wait "$pid"
ok "roster start webserver from the package answers roster health, stops on SIGTERM with status 0"

# systemd-analyze verify: systemd itself is not in the package's
# dependencies (the units are for machines that run it); man-db, for it to
# check the units' Documentation=man:roster(1)
apt-get install -y -q --no-install-recommends systemd man-db >/dev/null 2>&1
# a template is verified through an instance of it
mkdir -p /tmp/units
for u in "${units[@]}"; do
    name=$(basename "$u")
    cp "$u" "/tmp/units/${name/@./@check.}"
done
if ! SYSTEMD_LOG_LEVEL=notice systemd-analyze verify /tmp/units/*.service >/tmp/verify.log 2>&1; then
    cat /tmp/verify.log
    echo "systemd-analyze verify refused the units" >&2
    exit 1
fi
# it also exits 0 on some warnings: none may be about our units
if grep -i 'roster-' /tmp/verify.log; then
    echo "systemd-analyze verify warned about the units" >&2
    exit 1
fi
ok "systemd-analyze verify ($(systemd-analyze --version | head -n 1)): the 4 units, no warning"

apt-get purge -y -q roster >/dev/null 2>&1
[ ! -e /usr/bin/roster ] && [ ! -e /lib/systemd/system/roster-controller@.service ] ||
    { echo "apt-get purge roster left files" >&2; exit 1; }
ok "apt-get purge roster removes it"
