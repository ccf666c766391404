#!/usr/bin/env bash
# A/B of two builds of the module on the same Redis and seed: two nginx
# from the configuration `bench/run.sh start` wrote, one per .so, under
# wrk in alternating rounds (the box's run-to-run spread is larger than
# most single changes; alternating spreads it over both).
#
#   bench/run.sh start                       # Redis, seed, the stack
#   bench/ab.sh A.so B.so SCRIPT [ROUNDS] [DURATION] [CONNS]
#
# SCRIPT: a wrk script (shared/bench/peers/wrk/line_request.lua, ...);
# LG_PEERS_DATA: its seed files (default: the stack's); WARM=<s>: a
# warm-up of each nginx first (the 100k seed's key caches need ~30 s).
# WRITE_WS=<n>: a run that writes (bench/wrk/line_create.lua): Redis is
# flushed and seeded again before every run, as bench/run.sh's `write`
# targets are, with n fresh growth workspaces (each run must use fewer
# than n: 2 creations each), and each round also prints Redis's time per
# EVALSHA (INFO commandstats). CONFIRM_SEED=1: the same for a run of
# bench/wrk/provision_confirm.lua, seeded as bench/run.sh's confirm phase
# with the canned Stripe (100,000 numbers more, each account a card).
# Prints each round and the means; both nginx are stopped at the end.
set -euo pipefail

A=$1 B=$2 SCRIPT=$3 ROUNDS=${4:-5} DUR=${5:-5s} CONNS=${6:-50}
TMP=${LG_BENCH_TMP:-/tmp/lg-bench}
SRC=$TMP/linegate/nginx.conf
OUT=$TMP/ab
export LG_PEERS_DATA=${LG_PEERS_DATA:-$TMP/peers/data}
export LG_WRK_THREADS=2
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=${LG_PEERS_DIR:-$(dirname "$(dirname "$HERE")")/shared/bench/peers}
REDIS_PORT=${LG_REDIS_PORT:-6391}

# the seed of bench/run.sh's `write` (or `confirm`) targets, fresh
reseed() {
    local extra=(--write-workspaces "${WRITE_WS:-0}")
    [[ -n ${CONFIRM_SEED:-} ]] \
        && extra=(--inventory-extra 100000 --stripe-stub canned)
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    perl "$PEERS/seed.pl" --port "$REDIS_PORT" --out "$LG_PEERS_DATA" \
        --no-awaiting >/dev/null
    perl "$HERE/seed-extra.pl" --port "$REDIS_PORT" --data "$LG_PEERS_DATA" \
        --index --key-entries "${extra[@]}" 2>/dev/null
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
}

# Redis's mean time per EVALSHA since the last reseed, microseconds
evalsha_us() {
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
        awk -F'[:=,]' '$1 == "cmdstat_evalsha" { print $7 }'
}

# Redis's CPU time so far (utime + stime), in clock ticks
REDIS_PID=$(redis-cli -p "$REDIS_PORT" info server | tr -d '\r' |
            awk -F: '$1 == "process_id" { print $2 }')
HZ=$(getconf CLK_TCK)
redis_ticks() {
    awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat"
}

[[ -f $SRC ]] || { echo "ab: no $SRC (bench/run.sh start first)" >&2; exit 1; }
PORT=$(sed -n 's/.*listen 127\.0\.0\.1:\([0-9]*\) backlog.*/\1/p' "$SRC" | tail -1)
CANNED=$(sed -n 's/.*listen 127\.0\.0\.1:\([0-9]*\) backlog.*/\1/p' "$SRC" | head -1)

start() {    # name module port canned-port
    local d=$OUT/$1
    mkdir -p "$d"/{client_body,proxy,fastcgi,uwsgi,scgi}
    sed -e "s#^load_module .*#load_module $2;#" -e "s#$TMP/linegate#$d#g" \
        -e "s#127.0.0.1:$PORT #127.0.0.1:$3 #" \
        -e "s#127.0.0.1:$CANNED#127.0.0.1:$4#g" "$SRC" > "$d/nginx.conf"
    nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
}

stop() {
    local n
    for n in a b; do
        [[ -f $OUT/$n/nginx.pid ]] && kill "$(cat "$OUT/$n/nginx.pid")" 2>/dev/null
    done
    return 0
}
trap stop EXIT

start a "$A" 8390 12391
start b "$B" 8490 12491
sleep 1

if [[ -n ${WARM:-} ]]; then
    for port in 8390 8490; do
        wrk -t2 -c"$CONNS" -d"${WARM}s" -s "$SCRIPT" "http://127.0.0.1:$port/" \
            >/dev/null 2>&1 || true
    done
fi

: > "$OUT/rounds.txt"
for _ in $(seq 1 "$ROUNDS"); do
    for n in a b; do
        port=8390; [[ $n == b ]] && port=8490
        [[ -n ${WRITE_WS:-}${CONFIRM_SEED:-} ]] && reseed
        k0=$(redis_ticks)
        out=$(wrk -t2 -c"$CONNS" -d"$DUR" -s "$SCRIPT" "http://127.0.0.1:$port/" 2>&1)
        k1=$(redis_ticks)
        r=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
        bad=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
        # Redis's CPU per request, us (wrk's request count)
        rus=$(awk -v a="$k0" -v b="$k1" -v hz="$HZ" \
                  '/requests in/ { printf "%.1f", (b - a) / hz * 1e6 / $1 }' \
                  <<<"$out")
        echo "$n ${r:-0} non-2xx=${bad:-0} redis_us=${rus:-?}${WRITE_WS:+ evalsha_us=$(evalsha_us)}${CONFIRM_SEED:+ evalsha_us=$(evalsha_us)}" |
            tee -a "$OUT/rounds.txt"
    done
done
awk '{ s[$1] += $2; n[$1]++
       for (i = 3; i <= NF; i++) if ($i ~ /^redis_us=[0-9]/) {
           sub(/^redis_us=/, "", $i); u[$1] += $i; m[$1]++ } }
     END { printf "A mean %.0f  B mean %.0f  B/A %.2f", s["a"] / n["a"],
               s["b"] / n["b"], (s["b"] / n["b"]) / (s["a"] / n["a"])
           if (m["a"] && m["b"])
               printf "  Redis CPU us/req A %.1f  B %.1f", u["a"] / m["a"],
                   u["b"] / m["b"]
           printf "\n" }' "$OUT/rounds.txt"
