#!/usr/bin/env bash
# Installs what is missing, builds roster and runs it on its embedded default:
# a controller on SQLite (./roster.db), listening on 127.0.0.1:8000.
# Extra arguments go to `roster start controller` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "roster: controller on http://127.0.0.1:8000 (registry: ./roster.db). Ctrl-C stops it." >&2
exec build/roster start controller --host 127.0.0.1 --port 8000 --registry_db_name roster.db "$@"
