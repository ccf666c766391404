#!/usr/bin/env bash
# linegate_limit under wrk beside the rate-limiting peers of
# shared/bench/peers/ratelimit (nginx with no limit, limit_req,
# kjdev/nginx-ratelimit, OpenResty GCRA on lua-resty-redis), in one run of
# the peers' own `run.sh bench`: linegate's nginx is registered as two more
# targets (RL_BENCH_EXTRA), `linegate` (linegate_limit, no lease) and
# `linegate-lease` (the same zone with lease=10ms), and this script is the
# RL_LIMIT_HOOK that gives them the peers' limit before each scenario.
# `make bench-limit` runs it; `make bench` runs it after bench/run.sh.
#
#   bench/limit.sh            the whole benchmark: build, copy and install
#                             the peers, start everything, run.sh bench,
#                             the summary against issue 12's targets, stop
#   bench/limit.sh start      build and start everything, leave it running
#   bench/limit.sh stop       stop what start started (pid files)
#   bench/limit.sh hook N BURST   (RL_LIMIT_HOOK) N per minute, N-1 + the
#                             peers' RL_BURST at once: rewrite the zones,
#                             restart linegate's nginx, wait until it answers
#   bench/limit.sh summary [TABLE]  the summary again from a run's table
#
# The peers' directory is not written to: it is copied to
# $BUILD/peers-ratelimit and run from there (run.sh install writes the
# kjdev module and lua-resty-redis into its copy). Everything uses the
# peers' Redis (run.sh start: port 6392), so that their Redis columns
# (commands per request, new connections, Redis CPU) measure linegate too.
#
# Environment (defaults):
#   BENCH_QUICK=0 (or LG_BENCH_QUICK)  1: wrk -d5s, 1 round (~3 minutes)
#   LG_LIMIT_WRK="-t2 -c50 -d10s" (quick: -d5s)   LG_LIMIT_RUNS=2 (quick: 1)
#   LG_LIMIT_TMP=/tmp/lg-bench-limit   pid files, logs, tables
#   LG_LIMIT_PORT=8196 LG_LIMIT_LEASE_PORT=8197   linegate's two targets
#   LG_LIMIT_LEASE=10ms   the lease= of the leased zone
#   LG_PEERS_DIR  $(dirname repo)/shared/bench/peers (its ratelimit/ is used)
#   BUILD / LG_MODULE  $BUILD/ngx_http_linegate_module.so
#   LG_BENCH_NO_BUILD=1  skip make
#   RL_* (RL_REDIS_PORT, RL_KEEPALIVE=64, RL_BENCH_WARMUP, ...) go to the
#   peers' run.sh unchanged (its README.md)
#
# Semantics of "N per minute" (the peers' README): N at once, then N per
# minute, a GCRA. linegate_limit_zone rate=Nr/m burst=N-1 is exactly that
# (burst + 1 at once, one more every 60/N s), as limit_req's
# rate=Nr/m burst=N-1 nodelay and kjdev's requests=N burst=N-1. The
# directive takes at most 10^6 r/s (60,000,000 r/m) and a burst of at
# most 10^8: the peers' "never reached" 10^9 per minute becomes
# rate=60000000r/m burst=100000000, never reached by this box either.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BUILD=${BUILD:-$REPO/build}
MODULE=${LG_MODULE:-$BUILD/ngx_http_linegate_module.so}
NGX_BIN=${LG_NGINX:-/usr/sbin/nginx}
TMP=${LG_LIMIT_TMP:-/tmp/lg-bench-limit}
LG=$TMP/linegate
# the peers beside the repository (or beside its main checkout, from a
# git worktree)
PEERS_DIR=${LG_PEERS_DIR:-$(dirname "$REPO")/shared/bench/peers}
if [[ -z ${LG_PEERS_DIR:-} && ! -d $PEERS_DIR ]]; then
    PEERS_DIR=$(dirname "$(dirname "$(cd "$REPO" && realpath \
        "$(git rev-parse --git-common-dir 2>/dev/null || echo .)")")")/shared/bench/peers
fi
PEERS_SRC=$PEERS_DIR/ratelimit
PEERS=$BUILD/peers-ratelimit
PORT=${LG_LIMIT_PORT:-8196}
LEASE_PORT=${LG_LIMIT_LEASE_PORT:-8197}
LEASE=${LG_LIMIT_LEASE:-10ms}
WORKERS=${RL_WORKERS:-2}

QUICK=${LG_BENCH_QUICK:-${BENCH_QUICK:-0}}
[[ $QUICK == 0 || $QUICK == "" ]] && QUICK=0 || QUICK=1
if ((QUICK)); then
    WRK=${LG_LIMIT_WRK:-"-t2 -c50 -d5s"}
    RUNS=${LG_LIMIT_RUNS:-1}
else
    WRK=${LG_LIMIT_WRK:-"-t2 -c50 -d10s"}
    RUNS=${LG_LIMIT_RUNS:-2}
fi

export RL_PEERS_TMP=$TMP/peers
export RL_KEEPALIVE=${RL_KEEPALIVE:-64}
REDIS_PORT=${RL_REDIS_PORT:-6392}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench-limit: $*"; exit 1; }

alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

stop_nginx() {
    local f=$LG/nginx.pid pid i
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if [[ -n $pid ]] && alive "$pid"; then
        kill -QUIT "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            alive "$pid" || break
            sleep 0.05
        done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

wait_200() {    # wait_200 PORT
    local i
    for i in $(seq 1 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' \
               "http://127.0.0.1:$1/limited") == 200 ]] && return 0
        sleep 0.05
    done
    die "linegate does not answer 200 on port $1 (see $LG/error.log)"
}

# write_limit N BURST: the two zones, N per minute and BURST at once more
write_limit() {
    local n=$1 b=$2
    ((n > 60000000)) && n=60000000
    ((b > 100000000)) && b=100000000
    mkdir -p "$LG"
    cat > "$LG/limit.conf" <<EOF
linegate_limit_zone lg key=\$http_x_api_key rate=${n}r/m burst=$b;
linegate_limit_zone lg_lease key=\$http_x_api_key rate=${n}r/m burst=$b
                    lease=$LEASE;
EOF
}

start_nginx() {
    mkdir -p "$LG/html"
    chmod 0755 "$TMP" "$LG" "$LG/html"
    sed -e "s|@MODULE@|$MODULE|g" -e "s|@PREFIX@|$LG|g" \
        -e "s|@WORKERS@|$WORKERS|g" -e "s|@PORT@|$PORT|g" \
        -e "s|@LEASE_PORT@|$LEASE_PORT|g" \
        -e "s|@REDIS@|127.0.0.1:$REDIS_PORT|g" \
        "$HERE/limit.conf.in" > "$LG/nginx.conf"
    "$NGX_BIN" -t -q -p "$LG" -c "$LG/nginx.conf" -e "$LG/error.log" \
        || die "nginx -t failed for $LG/nginx.conf (see $LG/error.log)"
    "$NGX_BIN" -p "$LG" -c "$LG/nginx.conf" -e "$LG/error.log"
    wait_200 "$PORT"
    wait_200 "$LEASE_PORT"
}

# the limit hook: a fresh nginx with the limit, as the peers' set_limit
# does for theirs (QUIT, wait, start: fresh per-worker caches and leases)
cmd_hook() {
    (($# == 2)) || die "usage: $0 hook N BURST"
    write_limit "$1" "$2"
    stop_nginx
    start_nginx
    say "  linegate: limit $1 per minute, burst $2 (ports $PORT, $LEASE_PORT)"
}

peers() { bash "$PEERS/run.sh" "$@"; }

prepare_peers() {
    [[ -f $PEERS_SRC/run.sh ]] || die "no peers at $PEERS_SRC"
    [[ -d $PEERS ]] && chmod -R u+w "$PEERS"
    mkdir -p "$PEERS"
    cp -R "$PEERS_SRC/." "$PEERS/"
    chmod -R u+w "$PEERS"
    peers install >&2 || die "peers' run.sh install failed"
}

cmd_start() {
    if [[ ${LG_BENCH_NO_BUILD:-0} != 1 ]]; then
        make -s -C "$REPO" BUILD="$BUILD" >&2
    fi
    [[ -f $MODULE ]] || die "no module at $MODULE"
    mkdir -p "$TMP"
    prepare_peers
    peers start >&2 || die "peers' run.sh start failed"
    write_limit 1000000000 999999999
    stop_nginx
    start_nginx
    say "linegate: http://127.0.0.1:$PORT/limited (no lease)," \
        "http://127.0.0.1:$LEASE_PORT/limited (lease=$LEASE)"
}

cmd_stop() {
    stop_nginx
    [[ -f $PEERS/run.sh ]] && peers stop >&2 || true
}

# the summary: per scenario, linegate's rows against the peers of the same
# run, and issue 12's targets
cmd_summary() {
    local table=${1:-$TMP/table.md}
    [[ -f $table ]] || die "no table at $table"
    perl - "$table" <<'PERL'
use strict;
use warnings;

my %m;    # scenario -> peer -> {rps => [..], p99 => [..], cmds, evalsha, conns}
open my $fh, '<', $ARGV[0] or die "$ARGV[0]: $!";
while (<$fh>) {
    next unless /^\| (?!peer |---)/;
    my @c = map { s/^\s+|\s+$//gr } split /\|/;
    shift @c;
    my ($peer, $sc, $round, $rps, $p50, $p99, $non2xx, $err, $xs, $xl,
        $cmds, $conns, $cpu) = @c;
    my $e = $m{$sc}{$peer} //= {};
    push @{ $e->{rps} }, $rps;
    push @{ $e->{p99} }, $p99;
    push @{ $e->{cpu} }, $cpu;
    my ($tot) = $cmds =~ /^([\d.]+)/;
    my ($ev) = $cmds =~ /evalsha ([\d.]+)/;
    push @{ $e->{cmds} }, $tot // 0;
    push @{ $e->{evalsha} }, $ev // 0;
    push @{ $e->{conns} }, $conns;
    $e->{detail} = $cmds;
}
close $fh;

sub mean { my @v = @_; return 0 unless @v; my $s = 0; $s += $_ for @v; $s / @v }
sub sum { my $s = 0; $s += $_ for @_; $s }
sub r { my ($sc, $p, $k) = @_; mean(@{ $m{$sc}{$p}{$k} // [] }) }
sub x {
    my ($sc, $a, $b) = @_;
    my $d = r($sc, $b, 'rps');
    return $d ? r($sc, $a, 'rps') / $d : 0;
}

my @verdicts;
sub target {
    my ($ok, $what) = @_;
    push @verdicts, sprintf '%s %s', $ok ? 'PASS' : 'FAIL', $what;
}

print "\n## linegate_limit against the peers (means over the rounds)\n\n";
print "| scenario | target | req/s | p99 ms | x limit_req | x kjdev | x lua "
    . "| Redis cmds/req | EVALSHA/req | new Redis conns |\n";
print "|---|---|---:|---:|---:|---:|---:|---|---:|---:|\n";
for my $sc (qw(allow-1key allow-10k reject)) {
    for my $p (qw(limit_req kjdev lua linegate linegate-lease)) {
        next unless $m{$sc}{$p};
        printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %d |\n",
            $sc, $p, r($sc, $p, 'rps'), r($sc, $p, 'p99'),
            x($sc, $p, 'limit_req'), x($sc, $p, 'kjdev'), x($sc, $p, 'lua'),
            r($sc, $p, 'cmds'), r($sc, $p, 'evalsha'),
            sum(@{ $m{$sc}{$p}{conns} });
    }
}

if ($m{reject}{linegate}) {
    target(x('reject', 'linegate', 'limit_req') >= 0.9,
           sprintf 'reject >= 0.9 x limit_req: %.2f x (linegate), '
               . '%.2f x (linegate-lease)',
           x('reject', 'linegate', 'limit_req'),
           x('reject', 'linegate-lease', 'limit_req'));
}
if ($m{'allow-1key'}{'linegate-lease'}) {
    target(x('allow-1key', 'linegate-lease', 'limit_req') >= 0.85,
           sprintf 'allow 1 key with lease >= 0.85 x limit_req: %.2f x '
               . '(without lease: %.2f x)',
           x('allow-1key', 'linegate-lease', 'limit_req'),
           x('allow-1key', 'linegate', 'limit_req'));
}
if ($m{'allow-10k'}{linegate}) {
    my $sc = 'allow-10k';
    target(x($sc, 'linegate', 'kjdev') >= 1.3,
           sprintf 'allow 10k keys >= 1.3 x kjdev: %.2f x',
           x($sc, 'linegate', 'kjdev'));
    target(x($sc, 'linegate', 'lua') >= 1.5,
           sprintf 'allow 10k keys >= 1.5 x lua: %.2f x',
           x($sc, 'linegate', 'lua'));
    my $ev = r($sc, 'linegate', 'evalsha');
    target($ev > 0.98 && $ev < 1.02,
           sprintf 'allow 10k keys: one command sent per decision: '
               . '%.2f EVALSHA per request (%.2f Redis commands per '
               . 'request, those the script runs included: %s)',
           $ev, r($sc, 'linegate', 'cmds'), $m{$sc}{linegate}{detail});
    my $p99 = r($sc, 'linegate', 'p99');
    target($p99 < r($sc, 'kjdev', 'p99') && $p99 < r($sc, 'lua', 'p99'),
           sprintf 'allow 10k keys: p99 below both: %.2f ms (kjdev %.2f, '
               . 'lua %.2f)', $p99, r($sc, 'kjdev', 'p99'),
           r($sc, 'lua', 'p99'));
}
print "\n## issue 12's targets\n\n";
print "$_\n" for @verdicts;
PERL
}

cmd_run() {
    local t0 rc=0
    t0=$(date +%s)
    trap 'cmd_stop' EXIT
    cmd_start
    mkdir -p "$TMP"
    say "bench-limit: wrk $WRK, $RUNS round(s); linegate on :$PORT and" \
        ":$LEASE_PORT (lease=$LEASE)"
    {
        echo "# make bench-limit$( ((QUICK)) && echo ' BENCH_QUICK=1' || true)"
        echo
        echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
    } > "$TMP/table.md"
    RL_WRK_ARGS=$WRK RL_BENCH_RUNS=$RUNS \
        RL_BENCH_EXTRA="linegate:$PORT linegate-lease:$LEASE_PORT" \
        RL_LIMIT_HOOK="LG_LIMIT_TMP=$TMP LG_LIMIT_PORT=$PORT \
LG_LIMIT_LEASE_PORT=$LEASE_PORT LG_LIMIT_LEASE=$LEASE BUILD=$BUILD \
LG_MODULE=$MODULE bash $HERE/limit.sh hook" \
        peers bench | tee -a "$TMP/table.md" || rc=$?
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" \
        | tee -a "$TMP/table.md"
    ((rc == 0)) || die "peers' run.sh bench failed ($rc)"
    cmd_summary "$TMP/table.md" | tee "$TMP/summary.md"
    say "bench-limit: $(( $(date +%s) - t0 )) s; table $TMP/table.md," \
        "summary $TMP/summary.md"
}

case ${1:-run} in
    run) cmd_run ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    hook) shift; cmd_hook "$@" ;;
    summary) shift; cmd_summary "$@" ;;
    *) say "usage: $0 [run|start|stop|hook N BURST|summary [TABLE]]"; exit 2 ;;
esac
