#!/usr/bin/env bash
# linegate under wrk, side by side with nginx's own `return 200` and the
# benchmark peers of shared/bench/peers (OpenResty Lua, Node behind nginx,
# Node direct), on one Redis with the same data. `make bench` runs it.
#
#   bench/run.sh          the whole benchmark: build, start everything, seed,
#                         measure, print the report, stop everything
#   bench/run.sh start    build, start and seed, then leave it all running
#                         (prints the ports; for curl while developing)
#   bench/run.sh stop     stop what `start` started (pid files)
#   bench/run.sh report   the report and chart again from the last run's files
#
# What one run does (docs/performance.md says why):
#   1. make (BUILD as given to make), peers' run.sh install if needed
#   2. peers' run.sh start: redis-server --save "" --appendonly no, seed,
#      the three peers; the Stripe stub; nginx + linegate (bench/linegate.conf.in)
#   3. a sanity request per target: a target whose answer is not 2xx (an
#      endpoint not written yet) is reported and skipped, not measured
#   4. Redis round trips per request: MONITOR during a 1-connection wrk run
#   5. interleaved rounds over all targets, Redis flushed and reseeded
#      before every run; req/s, p50, p99, non-2xx, Redis commands per request
#      (INFO commandstats after - before, / requests), CPU of server and Redis
#   6. provision-preview + confirm pairs through the Stripe stub
#   7. cost curves: 1, 10, 50, 200 connections; 1k versus 100k workspaces
#   8. RSS of the nginx workers before and after 1M requests
#   9. provision-preview and GET /api/line-requests/:id on a Redis Cluster
#      beside one Redis (phase `cluster`, issue 10): 3 masters
#      (bench/cluster.sh, as bench/limit.sh's), the one Redis's key ids,
#      accounts, inventory, API keys and workspaces copied to them key by
#      key (bench/cluster-copy.pl), a second nginx (bench/linegate-cluster.conf.in:
#      linegate.conf.in with `linegate_redis <seeds> cluster=on`) on
#      LG_BENCH_CLUSTER_PORT; the peers' provision_preview.lua and
#      line_request.lua against both, rounds alternating; req/s, p99,
#      cluster / one Redis, Redis commands and reads per request summed over
#      the 3 masters, Redis CPU per request. An endpoint is skipped, with a
#      note in the report, when it does not answer 2xx (nginx -t refusing
#      the configuration skips both).
#      Alone: LG_BENCH_QUICK=1 LG_BENCH_PHASES=cluster bench/run.sh (~1 min)
#  10. report (stdout and $LG_BENCH_TMP/results/), chart (gnuplot); a full run
#      also writes docs/performance.png and the figures in docs/performance.md
#
# Environment (defaults):
#   LG_BENCH_QUICK=0 (or BENCH_QUICK, as `make bench BENCH_QUICK=1`): 3 s runs,
#                         one round, no Node peers, no cost curves, 100k
#                         workspaces or 1M requests (a few minutes in all)
#   LG_PEERS_DIR          $(dirname repo)/shared/bench/peers
#   LG_BENCH_TMP          /tmp/lg-bench (pid files, logs, raw wrk output)
#   BUILD / LG_MODULE     $BUILD/ngx_http_linegate_module.so (BUILD: repo/build)
#   LG_BENCH_PORT=8190    linegate's nginx (also serves /static)
#   LG_BENCH_STUB_PORT=12190  Stripe stub
#   LG_BENCH_STRIPE=canned   Stripe for the confirm phase: canned answers
#                         from a server of linegate's nginx (port
#                         LG_BENCH_CANNED_PORT=12191), so that confirm's
#                         own throughput is measured; "stub": the stateful
#                         Perl stub (its single process is the bottleneck)
#   LG_REDIS_PORT=6391 LG_LUA_PORT=8181 LG_NODE_NGINX_PORT=8182
#   LG_NODE_PORT=8183     the peers' (passed on to their run.sh)
#   LG_BENCH_WORKERS      nginx worker_processes of linegate: nproc
#   LG_BENCH_DURATION     10s (quick: 3s)   LG_BENCH_RUNS  3 (quick: 1)
#   LG_BENCH_THREADS=2 LG_BENCH_CONNS=50    wrk -t / -c
#   LG_BENCH_WARMUP=2     seconds per target before the rounds (0: none)
#   LG_BENCH_CONFIRM_CONNS  wrk -c of the confirm phase: LG_BENCH_CONNS
#                         (50) with the canned Stripe, as every other
#                         phase; 10 with the stub (its one process)
#   LG_BENCH_SCALE_WS=100000   LG_BENCH_MEM_REQUESTS=1000000
#   LG_BENCH_SCALE_WARMUP=40   seconds of warm-up per target before the
#                         100k runs (each worker must meet the 100k keys)
#   LG_BENCH_WRITE_WS     fresh workspaces for the write path: 150000
#                         (quick: 50000), two included creations each
#   LG_BENCH_PHASES       main,confirm,curves,scale,memory,cluster
#                         (quick: main,confirm,cluster); the sanity requests
#                         always run, the MONITOR round trips with main only
#   LG_BENCH_CLUSTER_PORT=8195   the cluster phase's nginx (8194 is the
#                         rate-limit peers' Lua, bench/limit.sh)
#   LG_BENCH_CLUSTER_PORTS="P1 P2 P3"   its 3 masters (default: free
#                         loopback ports; files in $LG_BENCH_TMP/cluster)
#   LG_BENCH_NO_BUILD=1   skip make;   LG_BENCH_DOCS=0: leave docs/ alone
#   LG_BENCH_PEERS=0      no peers (own redis-server with the same settings)

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PEERS=${LG_PEERS_DIR:-$(dirname "$REPO")/shared/bench/peers}
TMP=${LG_BENCH_TMP:-/tmp/lg-bench}
BUILD=${BUILD:-$REPO/build}
MODULE=${LG_MODULE:-$BUILD/ngx_http_linegate_module.so}
NGINX=${NGINX:-/usr/sbin/nginx}

QUICK=${LG_BENCH_QUICK:-${BENCH_QUICK:-0}}
[[ $QUICK == 0 || $QUICK == "" ]] && QUICK=0 || QUICK=1

PORT=${LG_BENCH_PORT:-8190}
STUB_PORT=${LG_BENCH_STUB_PORT:-12190}
CANNED_PORT=${LG_BENCH_CANNED_PORT:-12191}
STRIPE=${LG_BENCH_STRIPE:-canned}
case $STRIPE in
    canned) STRIPE_ADDR=127.0.0.1:$CANNED_PORT
            STRIPE_NAME='canned Stripe answers (an nginx server)' ;;
    stub)   STRIPE_ADDR=127.0.0.1:$STUB_PORT
            STRIPE_NAME='the Stripe stub' ;;
    *)      echo "bench: LG_BENCH_STRIPE is canned or stub" >&2; exit 1 ;;
esac
export LG_REDIS_PORT=${LG_REDIS_PORT:-6391}
export LG_LUA_PORT=${LG_LUA_PORT:-8181}
export LG_NODE_NGINX_PORT=${LG_NODE_NGINX_PORT:-8182}
export LG_NODE_PORT=${LG_NODE_PORT:-8183}
export LG_PEERS_TMP=$TMP/peers
export LG_PEERS_DATA=$LG_PEERS_TMP/data
REDIS_PORT=$LG_REDIS_PORT

WORKERS=${LG_BENCH_WORKERS:-$(nproc)}
THREADS=${LG_BENCH_THREADS:-2}
CONNS=${LG_BENCH_CONNS:-50}
# the canned Stripe answers at nginx's speed: confirm at the concurrency
# of every other phase (at 10, a purchase's six round trips in a row made
# the run measure latency, not what the server can take)
if [[ $STRIPE == stub ]]; then
    CONFIRM_CONNS=${LG_BENCH_CONFIRM_CONNS:-10}
else
    CONFIRM_CONNS=${LG_BENCH_CONFIRM_CONNS:-$CONNS}
fi
WARMUP=${LG_BENCH_WARMUP:-2}
SCALE_WS=${LG_BENCH_SCALE_WS:-100000}
SCALE_WARMUP=${LG_BENCH_SCALE_WARMUP:-40}
MEM_REQUESTS=${LG_BENCH_MEM_REQUESTS:-1000000}
CLERK_ISSUER=https://clerk.bench.linegate.test
if ((QUICK)); then
    DURATION=${LG_BENCH_DURATION:-3s}
    RUNS=${LG_BENCH_RUNS:-1}
    WRITE_WS=${LG_BENCH_WRITE_WS:-50000}
    PHASES=${LG_BENCH_PHASES:-main,confirm,cluster}
else
    DURATION=${LG_BENCH_DURATION:-10s}
    RUNS=${LG_BENCH_RUNS:-3}
    WRITE_WS=${LG_BENCH_WRITE_WS:-150000}
    PHASES=${LG_BENCH_PHASES:-main,confirm,curves,scale,memory,cluster}
fi
USE_PEERS=${LG_BENCH_PEERS:-1}

LG=$TMP/linegate
LGC=$TMP/linegate-cluster
CLUSTER_PORT=${LG_BENCH_CLUSTER_PORT:-8195}
RES=$TMP/results
RAW=$TMP/results/raw
DATA=$LG_PEERS_DATA
WRK_DIR=$HERE/wrk
export LG_WRK_THREADS=$THREADS

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }
phase() { [[ ,$PHASES, == *",$1,"* ]]; }
now() { date +%s; }

# the 3 masters of the cluster phase (bench/cluster.sh, shared with
# bench/limit.sh): start_cluster, stop_cluster, cluster_ports, cluster_pids
CLD=$TMP/cluster
# shellcheck disable=SC2034  # both read by bench/cluster.sh
CLUSTER_PORTS_WANTED=${LG_BENCH_CLUSTER_PORTS:-}
# shellcheck disable=SC2034
CLUSTER_PORTS_VAR=LG_BENCH_CLUSTER_PORTS
# shellcheck source=bench/procs.sh
. "$HERE/procs.sh"
# shellcheck source=bench/cluster.sh
. "$HERE/cluster.sh"

# ---------------------------------------------------------------- processes

peers_run() { "$PEERS/run.sh" "$@"; }

cmd_stop() {
    stop_pidfile "$LG/nginx.pid" QUIT "linegate nginx"
    stop_pidfile "$LGC/nginx.pid" QUIT "linegate nginx (cluster)"
    [[ -d $CLD ]] && stop_cluster
    stop_pidfile "$TMP/stub.pid" TERM "Stripe stub"
    stop_pidfile "$TMP/monitor.pid" TERM "redis-cli monitor"
    if [[ -d $LG_PEERS_TMP ]]; then
        if [[ -x $PEERS/run.sh ]]; then
            peers_run stop || true
        fi
        # own redis (LG_BENCH_PEERS=0) uses the same pid file
        stop_pidfile "$LG_PEERS_TMP/redis.pid" TERM "redis"
    fi
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ ${KEEP_RUNNING:-0} != 1 || $rc != 0 ]]; then
        cmd_stop
    fi
    exit "$rc"
}

wait_http() {    # wait_http URL NAME
    local i
    for i in $(seq 1 100); do
        curl -s -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 does not answer at $1"
}

rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# ---------------------------------------------------------------- setup

preflight() {
    local c missing=()
    for c in wrk redis-server redis-cli curl perl gnuplot openssl "$NGINX"; do
        command -v "$c" >/dev/null || missing+=("$c")
    done
    perl -MCrypt::JWT -MMojolicious -e1 2>/dev/null \
        || missing+=(libcrypt-jwt-perl libmojolicious-perl)
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (make deps)"

    [[ -f $PEERS/seed.pl ]] \
        || die "no $PEERS/seed.pl: the benchmark seeds with the peers' seed (set LG_PEERS_DIR)"
    if ((USE_PEERS)); then
        if [[ ! -x $PEERS/run.sh ]]; then
            say "bench: no peers at $PEERS (set LG_PEERS_DIR): measuring without them"
            USE_PEERS=0
        elif [[ ! -d $PEERS/node/node_modules/ioredis || ! -f $PEERS/lua/vendor/nginx/redis.lua ]] \
             || ! dpkg-query -W -f='${Status}' libnginx-mod-http-lua 2>/dev/null | grep -q 'ok installed'; then
            say "bench: installing the peers ($PEERS/run.sh install)"
            if ! peers_run install >&2; then
                say "bench: peers' install failed (is $PEERS writable?): measuring without them"
                USE_PEERS=0
            fi
        fi
    fi
}

build() {
    [[ ${LG_BENCH_NO_BUILD:-0} == 1 ]] && { [[ -f $MODULE ]] || die "no $MODULE"; return; }
    say "bench: make BUILD=$BUILD"
    make -s -C "$REPO" BUILD="$BUILD" >&2 || die "build failed"
    [[ -f $MODULE ]] || die "no $MODULE after make"
}

start_redis_alone() {
    mkdir -p "$LG_PEERS_TMP/data"
    [[ -f $LG_PEERS_TMP/redis.pid ]] && alive "$(cat "$LG_PEERS_TMP/redis.pid")" && return
    # the peers' settings: no RDB snapshots, no AOF
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --daemonize yes --dir "$LG_PEERS_TMP" \
        --pidfile "$LG_PEERS_TMP/redis.pid" --logfile "$LG_PEERS_TMP/redis.log"
    local i
    for i in $(seq 1 50); do
        rcli ping 2>/dev/null | grep -q PONG && return
        sleep 0.1
    done
    die "redis did not start"
}

start_stub() {
    [[ -f $TMP/stub.pid ]] && alive "$(cat "$TMP/stub.pid")" && return
    rm -f "$TMP/stub.pid"
    setsid perl "$REPO/t/stub/stripe-stub.pl" --listen "127.0.0.1:$STUB_PORT" \
        --pidfile "$TMP/stub.pid" --log "$TMP/stub.log" \
        >>"$TMP/stub.out" 2>&1 </dev/null &
    local i
    for i in $(seq 1 100); do
        [[ -s $TMP/stub.pid ]] && curl -sf "http://127.0.0.1:$STUB_PORT/_stub/health" >/dev/null && return
        sleep 0.1
    done
    die "Stripe stub did not start (see $TMP/stub.out)"
}

render_conf() {    # render_conf [TEMPLATE PREFIX PORT]
    local tpl=${1:-$HERE/linegate.conf.in} prefix=${2:-$LG} port=${3:-$PORT}
    local seeds=
    # shellcheck disable=SC2046
    [[ -f $CLD/ports ]] && seeds=$(printf '127.0.0.1:%s ' $(cluster_ports))
    mkdir -p "$prefix"
    sed -e "s|@MODULE@|$MODULE|g" -e "s|@PREFIX@|$prefix|g" \
        -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$port|g" \
        -e "s|@REDIS@|127.0.0.1:$REDIS_PORT|g" -e "s|@SEEDS@|${seeds% }|g" \
        -e "s|@STUB@|$STRIPE_ADDR|g" -e "s|@CANNED_PORT@|$CANNED_PORT|g" \
        -e "s|@CLERK_KEY@|$DATA/clerk/pub.pem|g" \
        -e "s|@CLERK_ISSUER@|$CLERK_ISSUER|g" \
        "$tpl" > "$prefix/nginx.conf"
}

start_linegate() {
    [[ -f $LG/nginx.pid ]] && alive "$(cat "$LG/nginx.pid")" && return
    render_conf
    : > "$LG/error.log"
    "$NGINX" -t -q -p "$LG" -c "$LG/nginx.conf" -e "$LG/error.log" \
        || die "nginx -t failed for $LG/nginx.conf (see $LG/error.log)"
    "$NGINX" -p "$LG" -c "$LG/nginx.conf" -e "$LG/error.log"
    wait_http "http://127.0.0.1:$PORT/static" "linegate nginx"
}

# seed KIND: the peers' seed (1000 workspaces x 10 line requests, 100
# accounts, 1000 numbers; no awaiting_payment request, so no Stripe
# reconciliation on read) + what linegate's endpoints need on top
seed() {
    local kind=${1:-base} extra=(--index --key-entries)
    perl "$PEERS/seed.pl" --port "$REDIS_PORT" --out "$DATA" --no-awaiting >/dev/null
    case $kind in
        write) extra+=(--write-workspaces "$WRITE_WS") ;;
        confirm)
            if [[ $STRIPE == stub ]]; then
                curl -sf -XPOST "http://127.0.0.1:$STUB_PORT/_stub/reset" >/dev/null
                extra+=(--inventory-extra 100000 --stripe-stub "http://127.0.0.1:$STUB_PORT")
            else
                extra+=(--inventory-extra 100000 --stripe-stub canned)
            fi ;;
    esac
    perl "$HERE/seed-extra.pl" --port "$REDIS_PORT" --data "$DATA" "${extra[@]}" 2>/dev/null
}

start_all() {
    mkdir -p "$TMP" "$RES" "$RAW"
    if ((USE_PEERS)); then
        peers_run start >&2 || die "peers' run.sh start failed"
    else
        start_redis_alone
    fi
    start_stub
    seed base
    # tokens for the seeded workspaces (their ids do not change on reseed)
    perl "$HERE/seed-extra.pl" --port "$REDIS_PORT" --data "$DATA" \
        --clerk "$CLERK_ISSUER" 2>/dev/null
    start_linegate
}

# ---------------------------------------------------------------- targets

# id|label|endpoint|impl|url|script|seed kind
TARGETS=()
# endpoint keys and their titles, in report order
ENDPOINTS=(static lr clerk byuser pv create)
declare -A EP_TITLE=(
    [static]='nginx `return 200` (static)'
    [lr]='GET /api/line-requests/:id, API key'
    [clerk]='GET /api/line-requests/:id, Clerk JWT'
    [byuser]='GET /api/lines/by-user'
    [pv]='POST provision-preview'
    [create]='POST /api/line-requests (included)'
    [confirm]='preview + confirm pairs (Stripe stub)'
)
IMPLS=(linegate lua nginx-node node nginx)
declare -A IMPL_TITLE=([linegate]=linegate [lua]='Lua (OpenResty)'
    [nginx-node]='nginx -> Node' [node]='Node direct' [nginx]=nginx)

define_targets() {
    local L="http://127.0.0.1:$PORT" PL="http://127.0.0.1:$LG_LUA_PORT"
    local NN="http://127.0.0.1:$LG_NODE_NGINX_PORT" N="http://127.0.0.1:$LG_NODE_PORT"
    local PW="$PEERS/wrk" W="$WRK_DIR"
    TARGETS=("static.nginx|nginx return 200|static|nginx|$L/static||base")
    TARGETS+=("lr.linegate|linegate|lr|linegate|$L|$PW/line_request.lua|base")
    if ((USE_PEERS)); then
        TARGETS+=("lr.lua|Lua peer|lr|lua|$PL|$PW/line_request.lua|base")
        if ((!QUICK)); then
            TARGETS+=("lr.nginx-node|nginx->node|lr|nginx-node|$NN|$PW/line_request.lua|base")
            TARGETS+=("lr.node|node direct|lr|node|$N|$PW/line_request.lua|base")
        fi
    fi
    TARGETS+=("clerk.linegate|linegate|clerk|linegate|$L|$W/line_request_clerk.lua|base")
    TARGETS+=("byuser.linegate|linegate|byuser|linegate|$L|$W/lines_by_user.lua|base")
    TARGETS+=("pv.linegate|linegate|pv|linegate|$L|$PW/provision_preview.lua|base")
    if ((USE_PEERS)); then
        TARGETS+=("pv.lua|Lua peer|pv|lua|$PL|$PW/provision_preview.lua|base")
        if ((!QUICK)); then
            TARGETS+=("pv.nginx-node|nginx->node|pv|nginx-node|$NN|$PW/provision_preview.lua|base")
            TARGETS+=("pv.node|node direct|pv|node|$N|$PW/provision_preview.lua|base")
        fi
    fi
    TARGETS+=("create.linegate|linegate|create|linegate|$L|$W/line_create.lua|write")
}

tfield() {    # tfield ID FIELD_NO
    local t
    for t in "${TARGETS[@]}"; do
        [[ ${t%%|*} == "$1" ]] && { cut -d'|' -f"$2" <<<"$t"; return; }
    done
}

# pids whose CPU a target's run is charged with (the server side)
target_pids() {
    local impl=$1 f p
    case $impl in
        linegate|nginx) f=$LG/nginx.pid ;;
        linegate-cluster) f=$LGC/nginx.pid ;;
        redis-cluster) [[ -f $CLD/ports ]] && cluster_pids; return 0 ;;
        lua) f=$LG_PEERS_TMP/lua/nginx.pid ;;
        node) f=$LG_PEERS_TMP/node.pid ;;
        nginx-node) f="$LG_PEERS_TMP/node-nginx/nginx.pid $LG_PEERS_TMP/node.pid" ;;
        stub) f=$TMP/stub.pid ;;
        redis) f=$LG_PEERS_TMP/redis.pid ;;
    esac
    for p in $f; do
        [[ -f $p ]] || continue
        p=$(cat "$p")
        echo "$p"
        ps -o pid= --ppid "$p" 2>/dev/null || true
    done
}

cpu_ticks() {    # total utime+stime of the given pids
    local p t=0 s
    for p in "$@"; do
        { read -r s < "/proc/$p/stat"; } 2>/dev/null || continue
        s=$(awk '{ print $12 + $13 }' <<<"${s##*) }")
        t=$((t + s))
    done
    echo "$t"
}

# "pid ppid ticks" of every process, ticks = utime + stime + cutime + cstime
# (a build's compilers, once reaped, count in their parent's cutime)
proc_snapshot() {
    local f l
    # first line: busy ticks of the whole box (user nice system irq softirq steal)
    awk '$1 == "cpu" { print "stat", 0, $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
    for f in /proc/[0-9]*/stat; do
        { read -r l < "$f"; } 2>/dev/null || continue
        echo "${l%% *} ${l##*) }"
    done | awk '{ print $1, $3, $13 + $14 + $15 + $16 }'
}

all_our_pids() {
    local i
    for i in linegate lua node nginx-node stub redis linegate-cluster \
             redis-cluster; do
        target_pids "$i"
    done
    echo "$$"
}

# other_cpu BEFORE AFTER SECONDS: % of one core used meanwhile by processes
# that are not part of the benchmark (not ours, not a kernel thread, not
# this script and its children such as wrk): other engineers' builds. A
# job reaped during the run brings all its CPU at once (its parent's
# cutime), so the figure is capped by what the box did meanwhile minus
# what the benchmark's processes did.
other_cpu() {
    awk -v secs="$3" -v hz="$(getconf CLK_TCK)" -v ours="$(all_our_pids | tr '\n' ' ')" '
        FILENAME == ARGV[1] { b[$1] = $3; next }
        $1 == "stat" { busy = $3 - b["stat"]; next }
        { pp[$1] = $2; t[$1] = $3 }
        END {
            n = split(ours, o, " "); for (i = 1; i <= n; i++) x[o[i]] = 1
            x[2] = 1
            do { ch = 0; for (p in pp) if (!(p in x) && (pp[p] in x)) { x[p] = 1; ch = 1 } } while (ch)
            for (p in t) {
                d = t[p] - ((p in b) ? b[p] : 0)
                if (!(p in x)) s += d; else if (p != 2 && pp[p] != 2) us += d
            }
            if (s > busy - us) s = busy - us
            if (s < 0) s = 0
            printf "%d", s / hz / secs * 100 }' "$1" "$2"
}

# ---------------------------------------------------------------- sanity

STATUS_NOTE=()    # "id|why" of targets not measured
declare -A READY=()

curl_status() {    # curl_status ARGS... -> "code body"
    local out
    out=$(curl -s -m 5 -w '\n%{http_code}' "$@") || true
    printf '%s %s' "${out##*$'\n'}" "$(head -c 160 <<<"${out%$'\n'*}" | tr '\n' ' ')"
}

sanity_one() {    # sanity_one ID -> status line
    sanity_one_at "${1%%.*}" "$(tfield "$1" 5)"
}

sanity_one_at() {    # sanity_one_at ENDPOINT URL -> status line
    local url=$2 key id1 tok kid sec
    key=$(sed -n 1p "$DATA/keys.txt")
    id1=$(sed -n 1p "$DATA/ids.txt" | cut -d' ' -f1)
    read -r kid sec < "$DATA/creds.txt"
    case $1 in
        static) curl_status "$url" ;;
        lr) curl_status -H "Authorization: Bearer $key" "$url/api/line-requests/$id1" ;;
        clerk)
            tok=$(sed -n 1p "$DATA/clerk.txt")
            curl_status -H "Authorization: Bearer $tok" "$url/api/line-requests/$id1" ;;
        byuser) curl_status -H "Authorization: Bearer $key" "$url/api/lines/by-user" ;;
        pv) curl_status -XPOST -H "sb-api-key-id: $kid" -H "sb-api-secret-key: $sec" \
                "$url/accounts/lines/provision-preview" ;;
        create)
            curl_status -XPOST -H "Authorization: Bearer tuco_benchwrite$(printf %08d 0)$(printf 'x%.0s' {1..22})" \
                -H 'Content-Type: application/json' \
                -d '{"firstName":"Bench","lastName":"Sanity","channelType":"phone","lineType":"purchased"}' \
                "$url/api/line-requests" ;;
    esac
}

sanity() {
    local t id st
    seed write
    for t in "${TARGETS[@]}"; do
        id=${t%%|*}
        st=$(sanity_one "$id")
        if [[ $st == 2* ]]; then
            READY[$id]=1
            say "  ready    $id: ${st:0:100}"
        else
            STATUS_NOTE+=("$id|answers ${st:0:120}")
            printf '%s|answers %s\n' "$id" "${st:0:120}" >> "$RES/notes.txt"
            say "  SKIPPED  $id: ${st:0:140}"
        fi
    done
    # the confirm path needs both steps
    seed confirm
    local out tok
    read -r kid sec < "$DATA/creds.txt"
    out=$(curl -s -m 5 -XPOST -H "sb-api-key-id: $kid" -H "sb-api-secret-key: $sec" \
          "http://127.0.0.1:$PORT/accounts/lines/provision-preview" || true)
    tok=$(sed -n 's/.*"preview_token":"\(lpv_[^"]*\)".*/\1/p' <<<"$out")
    if [[ -n $tok ]]; then
        st=$(curl_status -XPOST -H "sb-api-key-id: $kid" -H "sb-api-secret-key: $sec" \
             -H 'Content-Type: application/json' -d "{\"preview_token\":\"$tok\"}" \
             "http://127.0.0.1:$PORT/accounts/lines/provision-confirm")
    else
        st="preview: ${out:0:100}"
    fi
    if [[ $st == 2* ]]; then
        READY[confirm.linegate]=1
        say "  ready    confirm.linegate: ${st:0:100}"
    else
        STATUS_NOTE+=("confirm.linegate|answers ${st:0:120}")
        printf '%s|answers %s\n' confirm.linegate "${st:0:120}" >> "$RES/notes.txt"
        say "  SKIPPED  confirm.linegate: ${st:0:140}"
    fi
}

# ---------------------------------------------------------------- Redis counts

# "name calls" per command, INFO itself left out: of the one Redis, or
# (WRK_REDIS=redis-cluster) summed over the cluster's masters
cmdstats() {
    local p ports=$REDIS_PORT
    [[ ${WRK_REDIS:-redis} == redis-cluster ]] && ports=$(cluster_ports)
    for p in $ports; do
        redis-cli -p "$p" info commandstats
    done | tr -d '\r' \
        | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | grep -v '^info ' \
        | awk '{ n[$1] += $2 } END { for (c in n) print c, n[c] }' | sort
}

cmdstats_diff() {    # cmdstats_diff BEFORE AFTER REQUESTS -> "total breakdown"
    awk -v n="$3" 'FNR == NR { b[$1] = $2; next }
        { d = $2 - b[$1]; if (d > 0) { t += d; s = s sprintf(" %s=%.2f", $1, d / n) } }
        END { if (n > 0) printf "%.2f%s\n", t / n, s; else print "-" }' "$1" "$2"
}

declare -A RTRIPS=()    # id -> "round trips/req|in-script commands/req"

# Round trips are Redis's reads (INFO total_reads_processed): one per
# write of a client, so commands written together (a pipeline) count once.
# Less what MONITOR shows was not a request waiting: keepalive PINGs, the
# fire-and-forget PEXPIRE/DECR on a rate window, this probe's own INFO.
# MONITOR also shows the commands scripts run, as "[0 lua]".
redis_reads() {
    redis-cli -p "$REDIS_PORT" info stats |
        awk -F: '/^total_reads_processed:/ { print $2 + 0 }'
}

# every command Redis ran, those of scripts included
redis_commands() {
    redis-cli -p "$REDIS_PORT" info commandstats |
        awk -F'[=,]' '/^cmdstat_/ { n += $2 } END { print n + 0 }'
}

probe_roundtrips() {
    local id=$1 url script mon out req top lua r0 r1 unwaited
    url=$(tfield "$id" 5); script=$(tfield "$id" 6)
    mon=$RAW/monitor.$id.txt
    seed "$(tfield "$id" 7)"
    # hot reads: the workers' key caches meet the keys first (a key no
    # worker knows costs its lookup's GET, a round trip more, once per
    # key and worker: the scale phase reports that cold cost); not for
    # the write path, whose fresh workspaces each take two creations.
    # Every worker must meet them: the 1-connection run below lands on
    # any one, and 4 connections all accepted by the same worker left the
    # other cold (the API-key GET read 1.20 round trips, every key looked
    # up once, in a full run of 2026-11-25)
    if [[ $(tfield "$id" 7) != write ]]; then
        wrk -t2 -c"$CONNS" -d2s ${script:+-s "$script"} "$url" >/dev/null 2>&1 || true
    fi
    redis-cli -p "$REDIS_PORT" monitor > "$mon" 2>/dev/null &
    echo $! > "$TMP/monitor.pid"
    sleep 0.3
    r0=$(redis_reads)
    out=$(wrk -t1 -c1 -d1s ${script:+-s "$script"} "$url" 2>&1) || true
    sleep 0.3
    r1=$(redis_reads)
    stop_pidfile "$TMP/monitor.pid" TERM "redis-cli monitor" 2>/dev/null
    req=$(awk '/requests in/ {print $1}' <<<"$out")
    unwaited=$(awk '/\[[0-9]* lua\]/ || !/^[0-9.]* \[/ { next }
        { cmd = toupper($4) }
        cmd == "\"PING\"" || cmd == "\"PEXPIRE\"" || cmd == "\"DECR\"" { n++ }
        END { print n + 0 }' "$mon")
    top=$((r1 - r0 - 1 - unwaited))
    lua=$(grep -c '\[[0-9]* lua\]' "$mon" || true)
    if [[ -n $req && $req -gt 0 ]]; then
        RTRIPS[$id]=$(awk -v t="$top" -v l="$lua" -v n="$req" 'BEGIN { printf "%.2f|%.2f", t / n, l / n }')
    else
        RTRIPS[$id]="-|-"
    fi
    printf '%s\t%s\n' "$id" "${RTRIPS[$id]}" >> "$RES/roundtrips.tsv"
    say "  $id: ${RTRIPS[$id]%%|*} round trips/req, ${RTRIPS[$id]#*|} commands in scripts/req ($req requests)"
}

# ---------------------------------------------------------------- runs

to_ms() {    # wrk latency (512.00us, 1.23ms, 1.01s) -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.2f", n }'
}

# wrk_run TAG URL SCRIPT THREADS CONNS DURATION SERVER_IMPL -> one TSV line:
# tag rps p50 p99 non2xx errors requests cmds/req server_cpu% redis_cpu% breakdown
wrk_run() {
    local tag=$1 url=$2 script=$3 t=$4 c=$5 d=$6 impl=$7
    local out=$RAW/$tag.txt b=$RAW/$tag.cs0 a=$RAW/$tag.cs1
    local spids rpids s0 s1 r0 r1 t0 t1 hz
    spids=($(target_pids "$impl")); rpids=($(target_pids "${WRK_REDIS:-redis}"))
    hz=$(getconf CLK_TCK)
    cmdstats > "$b"
    proc_snapshot > "$RAW/$tag.ps0"
    s0=$(cpu_ticks "${spids[@]}"); r0=$(cpu_ticks "${rpids[@]}"); t0=$(date +%s.%N)
    LG_WRK_THREADS=$t wrk -t"$t" -c"$c" -d"$d" --latency ${script:+-s "$script"} "$url" > "$out" 2>&1 || true
    t1=$(date +%s.%N); s1=$(cpu_ticks "${spids[@]}"); r1=$(cpu_ticks "${rpids[@]}")
    proc_snapshot > "$RAW/$tag.ps1"
    cmdstats > "$a"
    local rps p50 p99 non2xx errs req cs scpu rcpu ocpu
    rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    errs=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' "$out")
    req=$(awk '/requests in/ {print $1}' "$out")
    cs=$(cmdstats_diff "$b" "$a" "${req:-0}")
    scpu=$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%d", (b - a) / hz / (t1 - t0) * 100 }')
    rcpu=$(awk -v a="$r0" -v b="$r1" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%d", (b - a) / hz / (t1 - t0) * 100 }')
    ocpu=$(other_cpu "$RAW/$tag.ps0" "$RAW/$tag.ps1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    [[ -n $rps ]] || { rps=0; say "  wrk failed for $tag: $(head -3 "$out" | tr '\n' ' ')"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$rps" "$p50" "$p99" \
        "${non2xx:-0}" "${errs:-0}" "${req:-0}" "${cs%% *}" "$scpu" "$rcpu" "$ocpu" "${cs#* }"
}

run_target() {    # run_target ID RUN -> appends to runs.tsv
    local id=$1 run=$2 url script kind line
    url=$(tfield "$id" 5); script=$(tfield "$id" 6); kind=$(tfield "$id" 7)
    seed "$kind"
    line=$(wrk_run "$id.$run" "$url" "$script" "$THREADS" "$CONNS" "$DURATION" "$(tfield "$id" 4)")
    printf '%s\t%s\t%s\n' "$id" "$run" "$line" >> "$RES/runs.tsv"
    awk -F'\t' '{ printf "  %-18s run %s: %8d req/s  p50 %6s  p99 %6s ms  non-2xx %s  err %s  redis %s cmd/req  cpu %s%% redis %s%% other %s%%\n",
        $1, $2, $4, $5, $6, $7, $8, $10, $11, $12, $13 }' <<<"$id	$run	$line" >&2
    if [[ $id == create.* ]]; then
        grep '^lg-create' "$RAW/$id.$run.txt" >&2 || true
    fi
}

phase_main() {
    local t id run
    : > "$RES/runs.tsv"
    if ((WARMUP > 0)); then
        say "bench: warm-up, ${WARMUP}s per target"
        for t in "${TARGETS[@]}"; do
            id=${t%%|*}
            [[ -n ${READY[$id]:-} ]] || continue
            [[ $(tfield "$id" 7) == write ]] && seed write
            LG_WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" \
                $( [[ -n $(tfield "$id" 6) ]] && echo "-s $(tfield "$id" 6)" ) \
                "$(tfield "$id" 5)" >/dev/null 2>&1 || true
        done
    fi
    for run in $(seq 1 "$RUNS"); do
        say "bench: round $run of $RUNS (wrk -t$THREADS -c$CONNS -d$DURATION)"
        for t in "${TARGETS[@]}"; do
            id=${t%%|*}
            [[ -n ${READY[$id]:-} ]] || continue
            run_target "$id" "$run"
        done
    done
}

phase_confirm() {
    : > "$RES/confirm.tsv"
    [[ -n ${READY[confirm.linegate]:-} ]] || return 0
    local run line out stub cpids s0 s1 t0 t1 hz r0 r1 k0 k1 rt kc
    hz=$(getconf CLK_TCK)
    say "bench: preview + confirm pairs through $STRIPE_NAME (wrk -t$THREADS -c$CONFIRM_CONNS -d$DURATION)"
    # Redis round trips per purchase (a preview and its confirm): Redis's
    # reads during a 1-connection run, where no two requests share a read
    seed confirm
    r0=$(redis_reads)
    LG_CONFIRM_ACCOUNT_OFFSET=0 wrk -t1 -c1 -d2s -s "$WRK_DIR/provision_confirm.lua" \
        "http://127.0.0.1:$PORT" > "$RAW/confirm.rtt.txt" 2>&1 || true
    r1=$(redis_reads)
    read -r _ c _ _ _ < <(grep '^lg-confirm:' "$RAW/confirm.rtt.txt" || echo "x 0 0 0 1")
    CONFIRM_RTT=$(awk -v a="$r0" -v b="$r1" -v c="$c" 'BEGIN { printf "%.2f", (c > 0 ? (b - a) / c : 0) }')
    say "  Redis round trips per purchase (1 connection, $c purchases): $CONFIRM_RTT (keepalive PINGs included)"
    for run in $(seq 1 "$RUNS"); do
        seed confirm
        cpids=($(target_pids stub))
        s0=$(cpu_ticks "${cpids[@]}"); t0=$(date +%s.%N)
        k0=$(redis_commands)
        line=$(LG_CONFIRM_ACCOUNT_OFFSET=$((run * THREADS)) wrk_run "confirm.linegate.$run" \
               "http://127.0.0.1:$PORT" "$WRK_DIR/provision_confirm.lua" \
               "$THREADS" "$CONFIRM_CONNS" "$DURATION" linegate)
        t1=$(date +%s.%N); s1=$(cpu_ticks "${cpids[@]}")
        k1=$(redis_commands)
        out=$RAW/confirm.linegate.$run.txt
        # confirms ok, previews ok, errors, seconds; stub CPU %
        read -r _ c p e secs < <(grep '^lg-confirm:' "$out" || echo "x 0 0 0 1")
        stub=$(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%d", (b - a) / hz / (t1 - t0) * 100 }')
        # Redis commands (scripts' inside included) per purchase: a
        # preview and its confirm; round trips from the 1-connection run
        rt=$CONFIRM_RTT
        kc=$(awk -v a="$k0" -v b="$k1" -v c="$c" 'BEGIN { printf "%.1f", (c > 0 ? (b - a) / c : 0) }')
        printf 'confirm.linegate\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$line" "$c" "$p" "$e" "$secs" "$stub" "$rt" "$kc" >> "$RES/confirm.tsv"
        awk -F'\t' -v c="$c" -v e="$e" -v s="$secs" -v st="$stub" -v rt="$rt" -v kc="$kc" '{ printf "  confirm run %s: %d req/s (%.0f confirms/s, %d errors)  p50 %s  p99 %s ms  stub cpu %s%%  Redis per purchase: %s round trips, %s commands\n",
            $2, $4, c / s, e, $5, $6, st, rt, kc }' <<<"x	$run	$line" >&2
        grep '^lg-confirm-first-error' "$out" >&2 || true
    done
}

phase_curves() {
    : > "$RES/curves.tsv"
    local c t id ids=() run
    for id in lr.linegate lr.lua static.nginx; do
        [[ -n ${READY[$id]:-} ]] && ids+=("$id")
    done
    ((${#ids[@]})) || return 0
    say "bench: cost curve, 1 10 50 200 connections (-d$DURATION)"
    for c in 1 10 50 200; do
        t=$THREADS; ((c < t)) && t=$c
        for id in "${ids[@]}"; do
            seed base
            run=$(wrk_run "curve.$id.c$c" "$(tfield "$id" 5)" "$(tfield "$id" 6)" \
                  "$t" "$c" "$DURATION" "$(tfield "$id" 4)")
            printf '%s\t%s\t%s\n' "$id" "$c" "$run" >> "$RES/curves.tsv"
            awk -F'\t' '{ printf "  %-14s c=%-3s %8d req/s  p99 %6s ms  non-2xx %s  other cpu %s%%\n", $1, $2, $4, $6, $7, $13 }' \
                <<<"$id	$c	$run" >&2
        done
    done
}

# 1k versus 100k workspaces (and keys), in the order 1k 100k 100k 1k so a
# drift of the machine hits both sizes alike
phase_scale() {
    : > "$RES/scale.tsv"
    : > "$RES/scale-cold.tsv"
    local ids=() id arm n big=$TMP/data-scale run=0 line w
    for id in lr.linegate lr.lua; do
        [[ -n ${READY[$id]:-} ]] && ids+=("$id")
    done
    ((${#ids[@]})) || return 0
    mkdir -p "$big"
    say "bench: 1k versus $SCALE_WS workspaces (GET line request, per-request formatting)"
    for arm in 1000 "$SCALE_WS" "$SCALE_WS" 1000; do
        run=$((run + 1))
        if [[ $arm == 1000 ]]; then
            seed base
            n=$DATA
        elif ((run == 2)); then
            say "  seeding $SCALE_WS workspaces x 10 line requests"
            perl "$PEERS/seed.pl" --port "$REDIS_PORT" --out "$big" --no-awaiting \
                --workspaces "$SCALE_WS" >/dev/null
            perl "$HERE/seed-extra.pl" --port "$REDIS_PORT" --data "$big" \
                --key-entries 2>/dev/null
            n=$big
            # the cold cost: the first run on keys no worker has met yet
            # (linegate's key caches and leases; the peers keep none)
            for id in "${ids[@]}"; do
                line=$(LG_PEERS_DATA=$n wrk_run "scale.$id.cold" "$(tfield "$id" 5)" \
                       "$WRK_DIR/line_request_scale.lua" "$THREADS" "$CONNS" "$DURATION" "$(tfield "$id" 4)")
                printf '%s\t%s\t%s\n' "$id" "$arm" "$line" >> "$RES/scale-cold.tsv"
                awk -F'\t' '{ printf "  %-14s %7s ws, cold: %8d req/s  p99 %6s ms  non-2xx %s  redis %s cmd/req\n", $1, $2, $4, $6, $7, $10 }' \
                    <<<"$id	$arm	$line" >&2
            done
        fi
        # steady state: a worker's key cache must first have met the keys
        # (a cold key costs a script); every target gets the same warm-up
        if ((run != 3)); then
            w=$WARMUP
            ((arm != 1000)) && w=$SCALE_WARMUP
            say "  warm-up: ${w}s per target"
            for id in "${ids[@]}"; do
                LG_PEERS_DATA=$n LG_WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"${w}s" \
                    -s "$WRK_DIR/line_request_scale.lua" "$(tfield "$id" 5)" >/dev/null 2>&1 || true
            done
        fi
        for id in "${ids[@]}"; do
            line=$(LG_PEERS_DATA=$n wrk_run "scale.$id.$arm.$run" "$(tfield "$id" 5)" \
                   "$WRK_DIR/line_request_scale.lua" "$THREADS" "$CONNS" "$DURATION" "$(tfield "$id" 4)")
            printf '%s\t%s\t%s\n' "$id" "$arm" "$line" >> "$RES/scale.tsv"
            awk -F'\t' '{ printf "  %-14s %7s ws: %8d req/s  p99 %6s ms  non-2xx %s  redis %s cmd/req\n", $1, $2, $4, $6, $7, $10 }' \
                <<<"$id	$arm	$line" >&2
        done
    done
    seed base
}

# ---------------------------------------------------------------- cluster

# the cluster gets the one Redis's seed of what preview reads: the key
# ids, the accounts (hash and provisioned-lines zset, one hash tag each)
# and the fleet's inventory, each key on the master of its slot
cluster_seed() {
    perl "$HERE/cluster-copy.pl" --from "$REDIS_PORT" \
        --to "$(cluster_ports | tr ' ' ',')" --flush \
        'lg:sbkey:*' 'lg:{acct:*' 'lg:{fleet}:inventory' \
        'lg:apikey:*' 'lg:{ws:*' 'lg:line:*' 2>>"$RES/cluster-seed.log" \
        || die "bench/cluster-copy.pl failed (see $RES/cluster-seed.log)"
}

# the cluster's nginx: linegate.conf.in's settings, cluster=on, the
# Provisioning locations only; 1 when nginx -t refuses the configuration
start_linegate_cluster() {
    render_conf "$HERE/linegate-cluster.conf.in" "$LGC" "$CLUSTER_PORT"
    : > "$LGC/error.log"
    "$NGINX" -t -q -p "$LGC" -c "$LGC/nginx.conf" -e "$LGC/error.log" \
        2>>"$LGC/error.log" || return 1
    "$NGINX" -p "$LGC" -c "$LGC/nginx.conf" -e "$LGC/error.log"
    wait_http "http://127.0.0.1:$CLUSTER_PORT/static" "linegate nginx (cluster)"
}

# cluster_reads: Redis's reads (total_reads_processed) of the one Redis
# ("one") or summed over the 3 masters ("cluster"); one per client write,
# so commands written together count once per node
cluster_reads() {
    local p ports=$REDIS_PORT
    [[ $1 == cluster ]] && ports=$(cluster_ports)
    for p in $ports; do
        redis-cli -p "$p" info stats
    done | tr -d '\r' | awk -F: '/^total_reads_processed:/ { n += $2 } END { print n + 0 }'
}

# provision-preview on a Redis Cluster of 3 masters beside one Redis, the
# same data, in this run: 1 connection (node reads per request, p50), a
# warm-up, then RUNS rounds of both (the order alternates), each run after
# a fresh seed; into $RES/cluster.tsv (EP: pv, provision-preview; lr,
# GET /api/line-requests/:id):
#   probe  KIND requests reads p50 EP
#   run    KIND RUN <wrk_run's line> reads EP
phase_cluster() {
    : > "$RES/cluster.tsv"
    local eps=() ep
    for ep in pv lr; do
        if [[ -n ${READY[$ep.linegate]:-} ]]; then
            eps+=("$ep")
        else
            cluster_note "$ep" "it does not answer 2xx on one Redis"
        fi
    done
    ((${#eps[@]})) || return 0
    say "bench: ${eps[*]} on a Redis Cluster (3 masters) beside one Redis"
    start_cluster
    cp "$CLD/idle-cpu" "$RES/cluster-idle-cpu"
    seed base
    cluster_seed
    if ! start_linegate_cluster; then
        local why
        why=$(grep -m1 emerg "$LGC/error.log" | sed 's/.*\[emerg\] [0-9#]*: //' | head -c 300)
        for ep in "${eps[@]}"; do
            cluster_note "$ep" "nginx -t refuses the cluster's configuration: $why"
        done
        say "  SKIPPED  the cluster: nginx -t: $why"
        stop_cluster
        return 0
    fi
    for ep in "${eps[@]}"; do
        cluster_endpoint "$ep"
    done
    # what the cluster's nginx logged (warn and above), then stop it all:
    # the later phases and the report need neither
    grep -c '' "$LGC/error.log" > "$RES/cluster-errors.txt" || true
    stop_pidfile "$LGC/nginx.pid" QUIT "linegate nginx (cluster)"
    stop_cluster
    seed base
}

cluster_note() {    # cluster_note EP WHY: the endpoint not measured
    STATUS_NOTE+=("cluster|not measured: $(cluster_ep_name "$1"): $2")
    printf 'cluster|not measured: %s: %s\n' "$(cluster_ep_name "$1")" "$2" >> "$RES/notes.txt"
}

cluster_ep_name() {
    case $1 in pv) echo provision-preview ;; lr) echo 'GET /api/line-requests/:id' ;; esac
}

# one endpoint of the cluster phase: its sanity request on the cluster, a
# 1-connection probe on each, then the rounds, the order alternating
cluster_endpoint() {
    local ep=$1 sec st url kind run line out r0 r1 req order script
    local one="http://127.0.0.1:$PORT" cl="http://127.0.0.1:$CLUSTER_PORT"
    script=$(tfield "$ep.linegate" 6)
    st=$(sanity_one_at "$ep" "$cl")
    if [[ $st != 2* ]]; then
        cluster_note "$ep" "on the cluster it answers ${st:0:120}"
        say "  SKIPPED  $(cluster_ep_name "$ep") on the cluster: ${st:0:140}"
        return 0
    fi
    say "  ready    $(cluster_ep_name "$ep") on the cluster: ${st:0:100}"
    # 1 connection: Redis reads per request (keepalive PINGs and the
    # probe's own INFO included, one per node) and p50
    for kind in one cluster; do
        [[ $kind == one ]] && url=$one || url=$cl
        r0=$(cluster_reads "$kind")
        out=$(LG_WRK_THREADS=1 wrk -t1 -c1 -d2s --latency -s "$script" "$url" 2>&1) || true
        r1=$(cluster_reads "$kind")
        req=$(awk '/requests in/ {print $1}' <<<"$out")
        printf 'probe\t%s\t%s\t%s\t%s\t%s\n' "$kind" "${req:-0}" "$((r1 - r0))" \
            "$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")" "$ep" >> "$RES/cluster.tsv"
        say "  $ep, $kind, 1 connection: ${req:-0} requests, $((r1 - r0)) Redis reads" \
            "($(awk -v a="$((r1 - r0))" -v n="${req:-0}" 'BEGIN { printf "%.2f", n ? a / n : 0 }')/req)"
    done
    if ((WARMUP > 0)); then
        for url in "$one" "$cl"; do
            LG_WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" \
                -s "$script" "$url" >/dev/null 2>&1 || true
        done
    fi
    for run in $(seq 1 "$RUNS"); do
        order="one cluster"
        ((run % 2 == 0)) && order="cluster one"
        for kind in $order; do
            seed base
            [[ $kind == cluster ]] && cluster_seed
            r0=$(cluster_reads "$kind")
            if [[ $kind == one ]]; then
                line=$(wrk_run "cluster.$ep.one.$run" "$one" "$script" "$THREADS" \
                       "$CONNS" "$DURATION" linegate)
            else
                line=$(WRK_REDIS=redis-cluster wrk_run "cluster.$ep.cluster.$run" "$cl" \
                       "$script" "$THREADS" "$CONNS" "$DURATION" linegate-cluster)
            fi
            r1=$(cluster_reads "$kind")
            printf 'run\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$run" "$line" "$((r1 - r0))" "$ep" >> "$RES/cluster.tsv"
            awk -F'\t' -v ep="$ep" '{ printf "  %s, %-7s run %s: %8d req/s  p99 %6s ms  non-2xx %s  err %s  redis %s cmd/req  cpu %s%% redis %s%% other %s%%\n",
                ep, $2, $3, $5, $7, $8, $9, $11, $12, $13, $14 }' <<<"run	$kind	$run	$line" >&2
        done
    done
}

worker_rss() {    # "pid:kB ..." of the linegate nginx workers
    local m p
    m=$(cat "$LG/nginx.pid")
    for p in $(ps -o pid= --ppid "$m"); do
        printf '%s:%s ' "$p" "$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)"
    done
}

phase_memory() {
    : > "$RES/memory.tsv"
    local ids=() id total=0 i=0 req before after
    for id in lr.linegate clerk.linegate byuser.linegate pv.linegate; do
        [[ -n ${READY[$id]:-} ]] && ids+=("$id")
    done
    ((${#ids[@]})) || return 0
    say "bench: RSS of linegate's workers before and after $MEM_REQUESTS requests (${ids[*]})"
    seed base
    for id in "${ids[@]}"; do    # warm every path first
        LG_WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d2s -s "$(tfield "$id" 6)" \
            "$(tfield "$id" 5)" >/dev/null 2>&1 || true
    done
    before=$(worker_rss)
    while ((total < MEM_REQUESTS)); do
        id=${ids[$((i % ${#ids[@]}))]}
        i=$((i + 1))
        wrk -t"$THREADS" -c"$CONNS" -d5s -s "$(tfield "$id" 6)" "$(tfield "$id" 5)" \
            > "$RAW/memory.$i.txt" 2>&1 || true
        req=$(awk '/requests in/ {print $1}' "$RAW/memory.$i.txt")
        ((${req:-0} > 0)) || { say "  wrk failed: $(head -3 "$RAW/memory.$i.txt")"; break; }
        total=$((total + req))
    done
    after=$(worker_rss)
    printf '%s\t%s\t%s\n' "$total" "$before" "$after" >> "$RES/memory.tsv"
    say "  $total requests; RSS before: $before; after: $after (kB)"
}

# ---------------------------------------------------------------- report

mean_of() {    # mean_of FILE ID COLUMN -> mean over the rows of ID
    awk -F'\t' -v id="$2" -v c="$3" '$1 == id { s += $c; n++ } END { if (n) printf "%.2f", s / n }' "$1"
}

report() {
    local out=$RES/report.md
    {
        echo "Command: \`$CMDLINE\` ($( ((QUICK)) && echo quick || echo full) mode), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(now) - START )) s."
        echo
        echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -r);" \
             "load average before the run: $LOAD0, after: $(cut -d' ' -f1-3 /proc/loadavg)."
        echo "nginx $("$NGINX" -v 2>&1 | cut -d/ -f2), redis $(redis-server --version | awk '{sub(/^v=/, "", $3); print $3}'), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}')$( ((USE_PEERS)) && echo ", node $(node --version)")."
        echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $RUNS round(s) over all targets interleaved, ${WARMUP}s warm-up each," \
             "Redis flushed and reseeded before every run; linegate: worker_processes $WORKERS (bench/linegate.conf.in)."
        echo
        echo "| endpoint | target | req/s (mean) | req/s range | p50 ms | p99 ms | non-2xx | sock. err | Redis cmds/req | round trips/req | server CPU | Redis CPU | other CPU | x static | x Lua | x nginx->Node | x Node |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        local ep impl id rt static_rps
        static_rps=$(mean_of "$RES/runs.tsv" static.nginx 4)
        for ep in "${ENDPOINTS[@]}"; do
            for impl in "${IMPLS[@]}"; do
                id=$ep.$impl
                grep -q "^$id	" "$RES/runs.tsv" 2>/dev/null || continue
                rt=${RTRIPS[$id]:-"-|-"}
                # ratios: the same endpoint's peers; Clerk reads against the
                # peers' API-key reads (same work, other credential)
                local peer_ep=$ep
                [[ $ep == clerk ]] && peer_ep=lr
                awk -F'\t' -v id="$id" -v ep="${EP_TITLE[$ep]}" -v im="${IMPL_TITLE[$impl]}" \
                    -v st="$static_rps" -v rt="${rt%%|*}" \
                    -v lua="$(mean_of "$RES/runs.tsv" "$peer_ep.lua" 4)" \
                    -v nn="$(mean_of "$RES/runs.tsv" "$peer_ep.nginx-node" 4)" \
                    -v no="$(mean_of "$RES/runs.tsv" "$peer_ep.node" 4)" '
                    function r(x) { return (x > 0 && m > 0) ? sprintf("%.2f", m / x) : "-" }
                    $1 == id { n++; s += $4; if (!lo || $4 < lo) lo = $4; if ($4 > hi) hi = $4;
                        p50 = p50 (p50 ? "/" : "") $5; p99 = p99 (p99 ? "/" : "") $6;
                        nx += $7; er += $8; cs += $10; sc += $11; rc += $12; oc = oc (oc != "" ? "/" : "") $13 "%" }
                    END { m = s / n;
                        printf "| %s | %s | %d | %d - %d | %s | %s | %d | %d | %.2f | %s | %d%% | %d%% | %s | %s | %s | %s | %s |\n",
                            ep, im, m, lo, hi, p50, p99, nx, er, cs / n, rt, sc / n, rc / n, oc,
                            (id == "static.nginx") ? "1.00" : r(st), r(lua), r(nn), r(no) }' "$RES/runs.tsv"
            done
        done
        echo
        echo "p50/p99: one value per run. Redis cmds/req: \`INFO commandstats\` after minus before, divided by wrk's requests; it counts the commands scripts run inside Redis too (\`EVALSHA\` + \`GET\` + \`HGETALL\` = 3). Round trips/req: writes the server made to Redis that a request waited for (Redis's \`total_reads_processed\`, less keepalive PINGs and the fire-and-forget \`PEXPIRE\`/\`DECR\` of a rate window seen with \`MONITOR\`), during a 1-connection run; commands pipelined in one write count once; below 1 when a fire-and-forget command shared a write with the next request's commands. CPU: % of one core (the box has $(nproc): $(( $(nproc) * 100 ))%), server = the target's processes (static: linegate's nginx), other = processes outside the benchmark (other engineers' builds and tests: figures with a high value were taken under contention). x static, x Lua...: req/s of the row / req/s of that target on the same endpoint (Clerk rows: against the peers' API-key reads)."
        if [[ -s $RES/confirm.tsv ]]; then
            echo
            if [[ $STRIPE == stub ]]; then
                echo "**Preview + confirm through the Stripe stub** (wrk -t$THREADS -c$CONFIRM_CONNS -d$DURATION, reported apart: the single-process Perl stub is the bottleneck)"
            else
                echo "**Preview + confirm, Stripe answered by canned replies of an nginx server** (wrk -t$THREADS -c$CONFIRM_CONNS -d$DURATION; the canned server runs in linegate's nginx, so its CPU is in linegate's; the stub column is 0)"
            fi
            echo
            echo "| run | requests/s (previews + confirms) | confirms/s | p50 ms | p99 ms | non-2xx | errors | stub CPU | linegate CPU | Redis CPU | Redis round trips / purchase | Redis commands / purchase |"
            echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            awk -F'\t' '{ printf "| %s | %d | %.0f | %s | %s | %d | %d | %d%% | %d%% | %d%% | %s | %s |\n",
                $2, $4, $15 / $18, $5, $6, $7, $17, $19, $11, $12, $20, $21 }' "$RES/confirm.tsv"
        fi
        if grep -q '^run' "$RES/cluster.tsv" 2>/dev/null; then
            cluster_report
        fi
        if [[ -s $RES/curves.tsv ]]; then
            echo
            echo "**Cost curve: GET line request (API key) and static by connections** (req/s / p99 ms / other CPU)"
            echo
            echo "| target | c=1 | c=10 | c=50 | c=200 |"
            echo "|---|---:|---:|---:|---:|"
            awk -F'\t' '{ v[$1, $2] = sprintf("%d / %s / %s%%", $4, $6, $13); if (!($1 in seen)) { seen[$1] = 1; o[++n] = $1 } }
                END { for (i = 1; i <= n; i++) printf "| %s | %s | %s | %s | %s |\n", o[i], v[o[i], 1], v[o[i], 10], v[o[i], 50], v[o[i], 200] }' \
                "$RES/curves.tsv"
        fi
        if [[ -s $RES/scale.tsv ]]; then
            echo
            echo "**1,000 versus $SCALE_WS workspaces/keys** (GET line request, API key; runs in the order 1k, ${SCALE_WS}, ${SCALE_WS}, 1k; before the first run of each size, a warm-up of ${WARMUP}s (1k) or ${SCALE_WARMUP}s (${SCALE_WS}) per target so that the workers' key caches have met the keys)"
            echo
            echo "| target | workspaces | req/s (each run) | p99 ms | non-2xx | Redis cmds/req | server CPU us/req | other CPU |"
            echo "|---|---:|---:|---:|---:|---:|---:|---:|"
            awk -F'\t' '{ k = $1 SUBSEP $2; if (!(k in seen)) { seen[k] = 1; o[++n] = k }
                r[k] = r[k] (r[k] ? " / " : "") $4; p[k] = p[k] (p[k] ? " / " : "") $6; nx[k] += $7
                cs[k] = $10; cpu[k] = cpu[k] (cpu[k] ? " / " : "") sprintf("%.1f", $4 ? $11 * 1e4 / $4 : 0); oc[k] = oc[k] (oc[k] ? " / " : "") $13 "%" }
                END { for (i = 1; i <= n; i++) { split(o[i], a, SUBSEP)
                    printf "| %s | %s | %s | %s | %d | %s | %s | %s |\n", a[1], a[2], r[o[i]], p[o[i]], nx[o[i]], cs[o[i]], cpu[o[i]], oc[o[i]] } }' \
                "$RES/scale.tsv"
        fi
        if [[ -s $RES/scale-cold.tsv ]]; then
            echo
            echo "Cold caches: the first run on the $SCALE_WS workspaces, before any warm-up (no linegate worker has met their keys: each key's first GET on a worker looks it up in Redis, and no workspace has a lease):"
            echo
            awk -F'\t' '{ printf "* %s: %d req/s, p99 %s ms, %d non-2xx, %s Redis cmds/req, server CPU %.1f us/req, other CPU %s%%\n",
                $1, $4, $6, $7, $10, $4 ? $11 * 1e4 / $4 : 0, $13 }' "$RES/scale-cold.tsv"
        fi
        if [[ -s $RES/memory.tsv ]]; then
            echo
            echo "**Worker memory** (VmRSS of linegate's nginx workers, kB)"
            echo
            awk -F'\t' '{ n = split($2, b, " "); for (i = 1; i <= n; i++) { split(b[i], kv, ":"); before[kv[1]] = kv[2] }
                m = split($3, a, " ")
                printf "After a warm-up of every path, then after %d more requests:", $1
                for (i = 1; i <= m; i++) { split(a[i], kv, ":")
                    printf "%s worker %s %d kB -> %d kB (%+d kB)", (i > 1 ? ";" : ""), kv[1], before[kv[1]], kv[2], kv[2] - before[kv[1]] }
                print "." }' "$RES/memory.tsv"
        fi
        local crashes errs
        crashes=$(grep -c 'exited on signal' "$LG/error.log" 2>/dev/null || true)
        errs=$(grep -cE '\[(error|crit|alert|emerg)\]' "$LG/error.log" 2>/dev/null || true)
        echo
        echo "linegate's error.log ($LG/error.log): ${crashes:-0} worker crashes, ${errs:-0} lines at error level or above."
        if ((${#STATUS_NOTE[@]})); then
            echo
            echo "**Not measured** (the sanity request did not get a 2xx; endpoints still being written are skipped):"
            echo
            local n
            for n in "${STATUS_NOTE[@]}"; do
                echo "* \`${n%%|*}\`: ${n#*|}"
            done
        fi
        echo
        targets_check
    } > "$out"
    cat "$out"
}

# the cluster phase's table and issue 10's two goals for it
cluster_report() {
    local ep
    for ep in pv lr; do
        awk -F'\t' -v ep="$ep" '$1 == "run" && $17 == ep { f = 1 } END { exit !f }' \
            "$RES/cluster.tsv" && cluster_report_ep "$ep"
    done
    echo
    echo "* the cluster nginx's error.log (warn and above): $(cat "$RES/cluster-errors.txt" 2>/dev/null || echo 0) lines"
}

# one endpoint's: EP pv (preview) or lr (GET by id)
cluster_report_ep() {
    local idle ep=$1 name
    name=$(cluster_ep_name "$ep")
    idle=$(cat "$RES/cluster-idle-cpu" 2>/dev/null || echo 0)
    echo
    echo "**$name on a Redis Cluster (3 masters, no replicas) beside one Redis** (wrk -t$THREADS -c$CONNS -d$DURATION, $RUNS round(s), the order alternating; the same seed copied key by key to the master of its slot before every cluster run; the same nginx settings, \`linegate_redis <3 seeds> cluster=on\`)"
    echo
    echo "| Redis | req/s (mean) | req/s (each run) | p50 ms | p99 ms | non-2xx | sock. err | Redis cmds/req | Redis reads/req | Redis reads/req, 1 conn. | p50 ms, 1 conn. | server CPU | Redis CPU | server CPU us/req | Redis CPU us/req | other CPU |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v idle="$idle" -v ep="$ep" '
        $1 == "probe" && $6 == ep { pr[$2] = $3 ? sprintf("%.2f", $4 / $3) : "-"; pp[$2] = $5; next }
        $1 != "run" || $17 != ep { next }
        { k = $2; n[k]++; s[k] += $5; each[k] = each[k] (each[k] != "" ? " / " : "") $5
          p50[k] = p50[k] (p50[k] != "" ? "/" : "") $6; p99[k] = p99[k] (p99[k] != "" ? "/" : "") $7
          nx[k] += $8; er[k] += $9; cs[k] += $11; sc[k] += $12; rc[k] += $13
          oc[k] = oc[k] (oc[k] != "" ? "/" : "") $14 "%"
          if ($5 > 0) { us[k] += $13 * 1e4 / $5; ss[k] += $12 * 1e4 / $5 }
          bd[k] = $15; if ($10 > 0) rl[k] += $16 / $10 }
        END {
            split("one cluster", o, " ")
            for (i = 1; i <= 2; i++) { k = o[i]; if (!n[k]) continue
                printf "| %s | %d | %s | %s | %s | %d | %d | %.2f | %.2f | %s | %s | %d%% | %d%% | %.1f | %.1f | %s |\n",
                    (k == "one" ? "one Redis" : "cluster, 3 masters"), s[k] / n[k], each[k], p50[k], p99[k],
                    nx[k], er[k], cs[k] / n[k], rl[k] / n[k], ((k in pr) ? pr[k] : "-"), ((k in pp) ? pp[k] : "-"),
                    sc[k] / n[k], rc[k] / n[k], ss[k] / n[k], us[k] / n[k], oc[k] }
            for (i = 1; i <= 2; i++) { k = o[i]; if (n[k]) printf "\n%s, Redis commands per request (last run):%s\n", (k == "one" ? "One Redis" : "Cluster (the 3 masters summed)"), bd[k] }
        }' "$RES/cluster.tsv"
    echo
    echo "Redis cmds/req: \`INFO commandstats\` after minus before, summed over the 3 masters for the cluster, / wrk's requests (scripts' own commands included). Redis reads/req: \`total_reads_processed\` (one per client write), summed over the nodes, / requests, during the runs and during a 1-connection run of 2 s (keepalive PINGs included): a pipeline whose commands go to two masters is two reads sent at once (one wait), so this column can grow on a cluster without a round trip more; the p50 at 1 connection shows a round trip more (tens of us on loopback). CPU: % of one core during the run, and per request (server: the target's nginx; the box has $(nproc) cores shared by wrk, both nginx, the Redis servers and other work, so req/s follows the CPU a request costs); Redis CPU: the 3 redis-servers together for the cluster, their idle cost included (cron, cluster bus: $(awk -v i="$idle" 'BEGIN { printf "%.1f%%", i * 100 }') of a core measured idle for 5 s)."
    echo
    awk -F'\t' -v ep="$ep" -v name="$name" '
        # per request: less the scripts whose rate is per second, not per
        # request (so more per request where req/s is lower), each with
        # the commands it runs (breakdown "evalsha=0.02"): preview, the
        # revalidation of the key ids, EVALSHA pv_account.lua + its HMGET,
        # per key every linegate_api_key_cache_ttl (500 ms); GET, the
        # workspace rate, once per lease (1 s) per workspace and worker:
        # EVALSHA rl_gcra.lua + its TIME and SET, or the idle key'"'"'s
        # SET ... NX alone (every decision writes one SET: a GET sends no
        # other), and the API keys'"'"' revalidation, GET lg:apikey:<digest>
        # + HVALS of the workspace'"'"'s keys, per key every
        # linegate_api_key_cache time (a cluster has no pushed time:
        # docs/directives.md)
        BEGIN { per = (ep == "pv") ? 2 : 3
                what = (ep == "pv") ? "the key ids'"'"' revalidation: EVALSHA pv_account.lua + its HMGET" \
                                    : "the workspace rate'"'"'s leases: EVALSHA rl_gcra.lua + its TIME and SET, or the idle key'"'"'s SET ... NX, and the API keys'"'"' revalidation: GET + HVALS" }
        function cmd(b, name,   v) { v = 0
            if (match(b, "(^| )" name "=[0-9.]+")) { v = substr(b, RSTART, RLENGTH); sub(/.*=/, "", v) }
            return v }
        $1 == "run" && $17 == ep { n[$2]++; s[$2] += $5; c[$2] += $11
            ev = cmd($15, "evalsha"); st = cmd($15, "set")
            kv = cmd($15, "get") + cmd($15, "hvals")
            d = (ep == "pv") ? ev : st + kv / 2
            p[$2] += $11 - ((ep == "pv") ? per * ev : 2 * ev + st + kv)
            eps[$2] += d * $5; rps[$2, $3] = $5
            if ($3 > runs) runs = $3 }
        END { if (!n["one"] || !n["cluster"]) exit
            one = s["one"] / n["one"]; cl = s["cluster"] / n["cluster"]
            co = c["one"] / n["one"]; cc = c["cluster"] / n["cluster"]
            po = p["one"] / n["one"]; pc = p["cluster"] / n["cluster"]
            # each round: its two runs back to back, one contention
            m = 0; rr = ""
            for (i = 1; i <= runs; i++)
                if (rps["one", i] > 0 && (("cluster", i) in rps)) {
                    x[++m] = rps["cluster", i] / rps["one", i]
                    rr = rr (rr != "" ? ", " : "") sprintf("%.2f", x[m]) }
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
            med = m ? ((m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2) : 0
            printf "* %s on the cluster >= 0.9x one Redis (issue 10): %s (%.2fx: %d against %d req/s, the means; each round: %s, median %.2fx)\n",
                name, (cl >= 0.9 * one ? "met" : "**not met**"), (one ? cl / one : 0), cl, one, rr, med
            # a CLUSTER SLOTS per worker now and then is the cluster'"'"'s own
            printf "* Redis commands per request of %s do not grow on the cluster: %s (%.2f on the cluster, %.2f on one Redis, less %s, %.0f/s on the cluster, %.0f/s on one Redis; all in: %.2f and %.2f per request; 0.01 of slack for CLUSTER SLOTS)\n",
                name, (pc <= po + 0.01 ? "met" : "**not met**"), pc, po, what, eps["cluster"] / n["cluster"], eps["one"] / n["one"], cc, co
        }' "$RES/cluster.tsv"
}

# the goals of the issue, checked against this run's figures
# round_ratios FILE A B -> "min median n" of A's req/s over B's, round by
# round (a round measures every target within a minute or two, so both
# sides of a ratio share the box's state of that moment: a ratio per
# round moves less than a ratio of means over rounds); empty without both
round_ratios() {
    awk -F'\t' -v a="$2" -v b="$3" '
        $1 == a { x[$2] = $4 } $1 == b { y[$2] = $4 }
        END { for (k in x) if (y[k] > 0 && x[k] > 0) r[++n] = x[k] / y[k]
            if (!n) exit
            for (i = 2; i <= n; i++) { v = r[i]; for (j = i - 1; j >= 1 && r[j] > v; j--) r[j + 1] = r[j]; r[j + 1] = v }
            med = (n % 2) ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
            printf "%.4f %.4f %d", r[1], med, n }' "$1"
}

targets_check() {
    local bu
    bu=$(mean_of "$RES/runs.tsv" byuser.linegate 4)
    echo "**Goals** (this run; a ratio's verdict is its median over the rounds, each round's ratio taken between targets measured in that round; the lowest round is given beside it):"
    echo
    awk -v bu="$bu" \
        -v lua="$(round_ratios "$RES/runs.tsv" lr.linegate lr.lua)" \
        -v st="$(round_ratios "$RES/runs.tsv" lr.linegate static.nginx)" \
        -v pv="$(round_ratios "$RES/runs.tsv" pv.linegate pv.lua)" \
        -v cl="$(round_ratios "$RES/runs.tsv" clerk.linegate lr.linegate)" \
        -v lgp99="$(awk -F'\t' '$1 == "lr.linegate" && (!m || $6 < m) { m = $6 } END { printf "%s", m }' "$RES/runs.tsv")" \
        -v peersp99="$(awk -F'\t' '$1 ~ /^lr\.(lua|node|nginx-node)$/ && (!m || $6 < m) { m = $6 } END { printf "%s", m }' "$RES/runs.tsv")" \
        -v rt_lr="${RTRIPS[lr.linegate]:-}" -v rt_cl="${RTRIPS[clerk.linegate]:-}" '
        function v(ok, have) { return have ? (ok ? "met" : "**not met**") : "not measured" }
        # ratio goal: "min median n" against the goal g
        function goal(what, rr, g,    f) {
            if (split(rr, f, " ") < 3) { printf "* %s: not measured\n", what; return }
            printf "* %s: %s (median %.2fx, lowest round %.2fx, %d round(s))\n", what, v(f[2] >= g, 1), f[2], f[1], f[3]
        }
        BEGIN {
            goal("GET line request (API key) >= 2.5x the Lua peer", lua, 2.5)
            goal("GET line request (API key) >= 0.55x nginx static", st, 0.55)
            printf "* GET line request p99 below every peer'"'"'s: %s (best run of each: linegate %s ms, best peer %s ms; contention only adds to a p99)\n", v(peersp99 > 0 && lgp99 < peersp99, lgp99 > 0 && peersp99 > 0), (lgp99 > 0 ? lgp99 : "-"), (peersp99 ? peersp99 : "-")
            goal("provision-preview >= 2x the Lua peer", pv, 2)
            goal("Clerk reads within 20% of API-key reads (>= 0.8x)", cl, 0.8)
            printf "* by-user (10 seeded lines, 9 listed) >= 33k req/s on a quiet machine (issue 14: 2.5x the script): %s (%s)\n", v(bu >= 33000, bu > 0), (bu > 0) ? sprintf("%.0f req/s", bu) : "-"
            split(rt_lr, a, "|"); split(rt_cl, b, "|")
            printf "* at most one Redis round trip per hot read: %s (API key %s, Clerk %s per request)\n", v(a[1] != "-" && a[1] + 0 <= 1.005 && (b[1] == "" || b[1] == "-" || b[1] + 0 <= 1.005), a[1] != "" && a[1] != "-"), a[1] ? a[1] : "-", b[1] ? b[1] : "-"
        }'
    # confirm's own throughput (issue 14): canned Stripe answers only
    if [[ -s $RES/confirm.tsv ]]; then
        awk -F'\t' -v stripe="$STRIPE" -v conns="$CONFIRM_CONNS" '
            $18 > 0 { s += $15 / $18; n++; if (!m || $15 / $18 < m) m = $15 / $18 }
            END { if (!n || stripe != "canned") { print "* preview + confirm >= 5,000 purchases/s (canned Stripe): not measured"; exit }
                printf "* preview + confirm >= 5,000 purchases/s (canned Stripe, %d connections): %s (mean %.0f/s, lowest run %.0f/s)\n",
                    conns, (m >= 5000 ? "met" : "**not met**"), s / n, m }' "$RES/confirm.tsv"
    fi
    # flat cost: with 100x the workspaces, req/s at 0.95x of 1k's or more
    # (issue 14) and linegate's CPU per request within 15%
    if [[ -s $RES/scale.tsv ]]; then
        awk -F'\t' -v big="$SCALE_WS" '$1 == "lr.linegate" { s[$2] += $4; n[$2]++; c[$2] = $10; if ($4) u[$2] += $11 * 1e4 / $4 }
            END { if (!n[1000] || !n[big]) { print "* cost per request flat from 1k to " big " workspaces: not measured"; exit }
                a = s[1000] / n[1000]; b = s[big] / n[big]; ua = u[1000] / n[1000]; ub = u[big] / n[big]
                printf "* cost per request flat from 1k to %d workspaces (issue 14: req/s >= 0.95x, linegate CPU per request within 15%%): %s (req/s %.2fx, linegate CPU %.1f -> %.1f us/req; Redis commands/req %s -> %s)\n",
                    big, (b >= 0.95 * a && ub <= 1.15 * ua) ? "met" : "**not met**", b / a, ua, ub, c[1000], c[big] }' "$RES/scale.tsv"
    fi
    if [[ -s $RES/memory.tsv ]]; then
        awk -F'\t' '{ n = split($2, b, " "); for (i = 1; i <= n; i++) { split(b[i], kv, ":"); before[kv[1]] = kv[2] }
                m = split($3, a, " "); worst = 0
                for (i = 1; i <= m; i++) { split(a[i], kv, ":"); d = kv[2] - before[kv[1]]; if (d > worst) worst = d }
                printf "* no worker memory growth over %d requests: %s (largest growth %+d kB; up to 1 MB is counted as allocator noise)\n",
                    $1, worst <= 1024 ? "met" : "**not met**", worst }' "$RES/memory.tsv"
    fi
}

chart() {
    # rows: endpoint; columns: linegate, Lua, nginx->Node, Node, nginx static
    local dat=$RES/rps.dat ep impl
    {
        echo "endpoint linegate Lua nginx->Node Node nginx"
        for ep in static lr clerk byuser pv create; do
            case $ep in
                static) printf '"static"' ;; lr) printf '"GET line request\\n(API key)"' ;;
                clerk) printf '"GET line request\\n(Clerk JWT)"' ;; byuser) printf '"GET lines\\nby-user"' ;;
                pv) printf '"POST provision\\npreview"' ;; create) printf '"POST line request\\n(create)"' ;;
            esac
            for impl in linegate lua nginx-node node nginx; do
                local m
                m=$(mean_of "$RES/runs.tsv" "$ep.$impl" 4)
                printf ' %s' "${m:--}"
            done
            echo
        done
        if [[ -s $RES/confirm.tsv ]]; then
            printf '"preview+confirm\\n(%s Stripe)" %s - - - -\n' "$STRIPE" "$(mean_of "$RES/confirm.tsv" confirm.linegate 4)"
        fi
    } > "$dat"
    gnuplot -e "datafile='$dat'; outfile='$RES/performance.png'; subtitle='$(date -u +%Y-%m-%d), mean of $RUNS run(s) of wrk -t$THREADS -c$CONNS -d$DURATION; $(nproc) cores shared by wrk, nginx, Redis, the peers (and whatever else ran: see other CPU)'" \
        "$HERE/plot.gp" 2>"$RES/gnuplot.log" || say "bench: gnuplot failed (see $RES/gnuplot.log)"
}

update_docs() {
    local doc=$REPO/docs/performance.md
    [[ -f $doc ]] || return 0
    cp "$RES/performance.png" "$REPO/docs/performance.png" 2>/dev/null || true
    perl -0777 -ne '
        BEGIN { open my $fh, "<", shift @ARGV or die; $new = <$fh>; close $fh }
        s/(<!-- bench:begin -->\n).*?(<!-- bench:end -->)/$1\n$new\n$2/s; print' \
        "$RES/report.md" "$doc" > "$doc.new" && mv "$doc.new" "$doc"
    say "bench: updated docs/performance.md and docs/performance.png"
}

# ---------------------------------------------------------------- main

cmd_bench() {
    START=$(now)
    LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
    CMDLINE=${LG_BENCH_CMDLINE:-"make bench$( ((QUICK)) && echo ' BENCH_QUICK=1' || true)"}
    preflight
    build
    rm -rf "$RES"; mkdir -p "$RES" "$RAW"
    : > "$RES/runs.tsv"
    trap on_exit EXIT INT TERM
    start_all
    define_targets
    say "bench: sanity requests"
    sanity
    local t id
    if phase main; then
        say "bench: Redis round trips per request (MONITOR, 1 connection)"
        for t in "${TARGETS[@]}"; do
            id=${t%%|*}
            [[ -n ${READY[$id]:-} && $id != static.* ]] && probe_roundtrips "$id"
        done
    fi
    phase main && phase_main
    phase confirm && phase_confirm
    phase curves && phase_curves
    phase scale && phase_scale
    phase memory && phase_memory
    phase cluster && phase_cluster
    chart
    say ""
    report
    if ((!QUICK)) && [[ ${LG_BENCH_DOCS:-1} != 0 ]]; then
        update_docs
    fi
    say "bench: raw wrk output in $RAW; report in $RES/report.md; chart $RES/performance.png"
}

case ${1:-bench} in
    bench) cmd_bench ;;
    start)
        preflight; build
        mkdir -p "$RES" "$RAW"
        KEEP_RUNNING=1
        trap on_exit EXIT INT TERM
        start_all
        cat >&2 <<EOF
started (bench/run.sh stop stops it all):
  linegate  http://127.0.0.1:$PORT (+ /static), config $LG/nginx.conf
  redis     127.0.0.1:$REDIS_PORT, seed files in $DATA
  stub      http://127.0.0.1:$STUB_PORT
$( ((USE_PEERS)) && echo "  peers     lua :$LG_LUA_PORT, nginx->node :$LG_NODE_NGINX_PORT, node :$LG_NODE_PORT")
EOF
        ;;
    stop) cmd_stop ;;
    report)    # the report and chart again, from the files of the last run
        START=$(now); LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
        CMDLINE=${LG_BENCH_CMDLINE:-"make bench$( ((QUICK)) && echo ' BENCH_QUICK=1' || true)"}
        while IFS=$'\t' read -r id v; do RTRIPS[$id]=$v; done < <(cat "$RES/roundtrips.tsv" 2>/dev/null)
        while IFS= read -r l; do STATUS_NOTE+=("$l"); done < <(cat "$RES/notes.txt" 2>/dev/null)
        chart; report ;;
    *) say "usage: $0 [bench|start|stop|report]"; exit 2 ;;
esac
