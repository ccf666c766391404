#!/usr/bin/env bash
#
# Runs the fuzz targets built by t/fuzz/build.sh, one after the other.
#
#   bash t/fuzz/run.sh <fuzz build dir> <seconds> [target...]
#   FUZZ_RUNS=N bash t/fuzz/run.sh ...     stop each after N executions
#                                          (and at most <seconds>)
#
# Each target starts from its seeds (t/fuzz/corpus/<target>/, read only)
# and from what earlier runs found (<fuzz build dir>/corpus/<target>/,
# where new inputs go), with its dictionary.  A crash, leak, sanitizer
# report or timeout (30 s: runs are niced on a busy machine) is saved as
# <fuzz build dir>/artifacts/<target>-*, printed, and makes the run fail
# once every target has run.  A line per target gives its executions.

set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:?usage: run.sh <fuzz build dir> <seconds> [target...]}
secs=${2:?usage: run.sh <fuzz build dir> <seconds> [target...]}
shift 2

declare -A dict=(
    [jwt]=jwt [jwks]=json [stripe_signature]=stripe_signature
    [line_create]=json [confirm]=json [webhook]=json [headers]=headers
    [stripe_reply]=json [redis_reply]=redis [lines_read]=redis
    [redis_slots]=redis_slots [redis_arena]=redis [redis_error]=redis
    [operator]=operator
    [redis_pubsub]=pubsub [limit]=redis [reconcile_list]=json
)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(jwt jwks stripe_signature line_create confirm webhook headers
             stripe_reply redis_reply lines_read redis_slots redis_arena
             redis_error operator redis_pubsub limit reconcile_list)
fi

runs=()
if [ -n "${FUZZ_RUNS:-}" ]; then
    runs=(-runs="$FUZZ_RUNS")
fi

failed=()
mkdir -p "$dir/artifacts"

for t in "${targets[@]}"; do
    mkdir -p "$dir/corpus/$t"
    log=$dir/$t.log

    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ASAN_OPTIONS=detect_leaks=1 \
    "$dir/fuzz_$t" -max_total_time="$secs" "${runs[@]}" \
        -timeout=30 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -dict="$root/t/fuzz/dict/${dict[$t]}.dict" \
        -artifact_prefix="$dir/artifacts/$t-" \
        "$dir/corpus/$t" "$root/t/fuzz/corpus/$t" > "$log" 2>&1
    rc=$?

    execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
    speed=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)

    if [ $rc -ne 0 ]; then
        failed+=("$t")
        echo "fuzz_$t: FAILED (exit $rc) after ${execs:-?} executions:"
        grep -E -A30 'ERROR|runtime error|stub reached' "$log" | head -60

    else
        echo "fuzz_$t: ${execs:-?} executions, ${speed:-?}/s, $cov," \
             "0 crashes"
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: failed: ${failed[*]} (inputs in $dir/artifacts/)"
    exit 1
fi
