#!/usr/bin/env bash
# tests/layers.sh — the include graph points down the layers of
# docs/ARCHITECTURE.md and nowhere else:
#
#   cli/ -> api/, pollers/ -> dispatcher/ -> sandbox/, sinks/ -> config/ -> core/
#
# A file may include its own part's headers and those of parts below it.
# Parts on one level (api and pollers; sandbox and sinks) do not include
# each other. A part-private header (`#include "internal.h"`, any quoted
# path that is not "sluice/...") must lie inside the including file's part.
# Every public header in include/sluice/ belongs to exactly one part, named
# in the table below: a new header fails the check until it is placed.
#
#   tests/layers.sh          check; prints each wrong arrow, exits 1 if any
#   tests/layers.sh --graph  also print the part-to-part arrows with counts
set -uo pipefail
cd "$(dirname "$0")/.."

# level of each part: a part may include parts of a lower level
declare -A LEVEL=(
    [core]=0 [config]=1 [sinks]=2 [sandbox]=2 [dispatcher]=3 [pollers]=4 [api]=4 [cli]=5
)

# owner of each public header
declare -A OWNER=(
    [backoff.h]=core [resolve.h]=core [clock.h]=core [err.h]=core [filter.h]=core [hash.h]=core
    [invoke.h]=core [jbuf.h]=core [kafka.h]=core [log.h]=core [mem.h]=core [metrics.h]=core
    [datadir.h]=core [mring.h]=core [pgconn.h]=core [pool.h]=core [redis.h]=core [runtime.h]=core
    [logring.h]=core
    [config.h]=config [overrides.h]=config
    [sink.h]=sinks [capture_sink.h]=sinks [dlqops.h]=sinks
    [sandbox.h]=sandbox [env.h]=sandbox [frame.h]=sandbox [fake_functions.h]=sandbox
    [dispatch.h]=dispatcher [poller.h]=dispatcher
    [pollers.h]=pollers [memory_poller.h]=pollers
    [api.h]=api
)

graph=0
[ "${1:-}" = --graph ] && graph=1

bad=0
declare -A ARROWS=()

part_of() {                       # part of a source path, or "" when not a part
    local top=${1%%/*}
    [ -n "${LEVEL[$top]+x}" ] && echo "$top"
}

while IFS= read -r f; do
    case $f in
        include/sluice/*.h)
            h=${f#include/sluice/}
            p=${OWNER[$h]:-}
            if [ -z "$p" ]; then
                echo "layers: $f belongs to no part: add it to OWNER in tests/layers.sh"
                bad=1
                continue
            fi ;;
        *)  p=$(part_of "$f")
            [ -z "$p" ] && continue ;;
    esac
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
        inc=${BASH_REMATCH[1]}
        if [[ $inc == sluice/* ]]; then
            h=${inc#sluice/}
            q=${OWNER[$h]:-}
            if [ -z "$q" ]; then
                echo "$f:$n: includes $inc, which belongs to no part"
                bad=1
                continue
            fi
        else
            # a private header: resolve it against the including file
            target=$(realpath -m --relative-to=. "$(dirname "$f")/$inc")
            q=$(part_of "$target")
            if [ "$q" != "$p" ]; then
                echo "$f:$n: includes $inc ($target), private to ${q:-no part}, from part $p"
                bad=1
                continue
            fi
        fi
        [ "$q" = "$p" ] && continue
        ARROWS["$p -> $q"]=$(( ${ARROWS["$p -> $q"]:-0} + 1 ))
        if [ "${LEVEL[$q]}" -ge "${LEVEL[$p]}" ]; then
            echo "$f:$n: $p includes $inc of $q, which is not below it"
            bad=1
        fi
    done < "$f"
done < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | grep -v -E '^(tests|bench|fuzz|runtime|examples)/' | sort)

if [ "$graph" = 1 ]; then
    for a in "${!ARROWS[@]}"; do printf '%4d  %s\n' "${ARROWS[$a]}" "$a"; done | sort -k2
fi
if [ "$bad" = 0 ]; then
    echo "layers: every include points down"
    exit 0
fi
echo "layers: includes that point up or sideways (see above)"
exit 1
