#!/usr/bin/env bash
# Source checks CI runs: formatting, banned functions, generated docs.
#   scripts/check-source.sh [path/to/roster]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/roster}
fail=0
files=$(git ls-files '*.c' '*.h')

if ! clang-format --dry-run -Werror $files 2>/tmp/roster-format.txt; then
    echo "check-source: files not formatted (run: clang-format -i \$(git ls-files '*.c' '*.h')):" >&2
    grep -o '^[^:]*\.[ch]' /tmp/roster-format.txt | sort -u >&2
    fail=1
fi

# Unsafe or ambiguous functions (STYLE.md): use snprintf, util_strlcpy,
# util_parse_*, strtok_r, gmtime_r, the case-sensitive cJSON getters.
banned='\b(gets|strcpy|strcat|sprintf|vsprintf|atoi|atol|atof|strtok|gmtime|localtime|asctime|ctime|event_set|event_base_set|cJSON_GetObjectItem|cJSON_GetErrorPtr)\s*\('
if grep -nE "$banned" $files | grep -v 'check-source: allow'; then
    echo "check-source: banned function used (see above)" >&2
    fail=1
fi

if [ -x "$bin" ]; then
    if ! "$bin" config-doc | diff -u docs/configuration.md - >/tmp/roster-config-diff.txt; then
        echo "check-source: docs/configuration.md is stale: $bin config-doc > docs/configuration.md" >&2
        head -40 /tmp/roster-config-diff.txt >&2
        fail=1
    fi
fi
exit $fail
