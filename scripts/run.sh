#!/usr/bin/env bash
# Installs what is missing, builds roster and runs it on its embedded
# default: `roster start webserver` on 127.0.0.1:5670, the whole system in
# one process (a controller on SQLite in ./roster-data/roster.db, the builtin
# chat model and embedder, the OpenAI-compatible API and the dashboard).
# Extra arguments go to `roster start webserver` (try --help).
# ROSTER_BIN=path runs that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ROSTER_BIN:-}
if [ -z "$bin" ]; then
    scripts/deps.sh build
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc)" >/dev/null
    bin=build/roster
fi
echo "roster: Ctrl-C stops it." >&2
exec "$bin" start webserver --host 127.0.0.1 --port 5670 --data_dir roster-data "$@"
