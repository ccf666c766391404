# shellcheck shell=bash
# A Redis Cluster of 3 masters for the benchmarks: sourced by
# bench/limit.sh (linegate_limit on a cluster) and bench/run.sh (the
# `cluster` phase: provision-preview on a cluster). Not run by itself.
#
# The sourcing script sets
#   CLD                   the cluster's directory: ports, nodes' pid files,
#                         logs and nodes.conf, the idle CPU (removed by
#                         stop_cluster)
#   CLUSTER_PORTS_WANTED  "P1 P2 P3", or empty: free loopback ports
#   CLUSTER_PORTS_VAR     the environment variable that gave them (named
#                         in the error message)
# and defines say and die, as both scripts do; alive and stop_pidfile
# come from bench/procs.sh, which both source first.
#
# No replicas (this measures routing, not failover); each node as the
# peers' Redis: no persistence (--save '' --appendonly no).

# free_ports N: N loopback TCP ports free now, all different, below the
# kernel's ephemeral range (t/lib/LG/Stack.pm's choice, shared with the
# tests): a port the kernel hands out (LocalPort 0) may be taken as the
# local port of an outgoing connection (wrk's, nginx's) before the node
# binds it, and a node then failed "does not answer" in a full make bench
free_ports() {
    perl -I"$HERE/../t/lib" -MLG::Stack -e \
        'print join(" ", LG::Stack::_free_ports($ARGV[0])), "\n"' "$1"
}

cluster_ports() { cat "$CLD/ports"; }

cluster_alive() {
    local p
    [[ -f $CLD/ports ]] || return 1
    for p in $(cluster_ports); do
        [[ -f $CLD/$p/redis.pid ]] && alive "$(cat "$CLD/$p/redis.pid")" \
            || return 1
    done
}

# cluster_pids: the pids of the 3 redis-servers
cluster_pids() {
    local p
    for p in $(cluster_ports); do
        [[ -f $CLD/$p/redis.pid ]] && cat "$CLD/$p/redis.pid"
    done
}

# every node sees the 3 masters and all the slots assigned and ok
cluster_ok() {
    local p i
    for p in $(cluster_ports); do
        i=$(redis-cli -p "$p" CLUSTER INFO 2>/dev/null | tr -d '\r')
        grep -qx 'cluster_state:ok' <<<"$i" || return 1
        grep -qx 'cluster_slots_ok:16384' <<<"$i" || return 1
        grep -qx 'cluster_known_nodes:3' <<<"$i" || return 1
    done
}

# start_cluster: 3 masters, the slots spread by redis-cli --cluster
# create, then 5 s of the idle nodes' CPU (cron, cluster bus) into
# $CLD/idle-cpu (s/s), which a per-request CPU figure may take off
start_cluster() {
    local ports bus free p i
    if cluster_alive; then
        say "cluster already running on $(cluster_ports)"
        return 0
    fi
    stop_cluster
    mkdir -p "$CLD"
    # the nodes' ports and their bus ports from one call: two calls may
    # hand out the same free port twice (a node then fails to bind)
    read -r -a free <<<"$(free_ports 6)"
    bus=("${free[@]:0:3}")
    ports=${CLUSTER_PORTS_WANTED:-${free[*]:3:3}}
    [[ $(wc -w <<<"$ports") == 3 ]] \
        || die "${CLUSTER_PORTS_VAR:-cluster ports}: 3 ports, not '$ports'"
    echo $ports > "$CLD/ports"
    i=0
    for p in $ports; do
        mkdir -p "$CLD/$p"
        redis-server --port "$p" --bind 127.0.0.1 --save '' \
            --appendonly no --daemonize yes --dir "$CLD/$p" \
            --pidfile "$CLD/$p/redis.pid" --logfile "$CLD/$p/redis.log" \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 3000 --cluster-port "${bus[$i]}" \
            || die "redis-server on $p did not start (see $CLD/$p/redis.log)"
        i=$((i + 1))
    done
    for p in $ports; do
        for i in $(seq 1 50); do
            redis-cli -p "$p" PING 2>/dev/null | grep -q PONG && break
            ((i < 50)) || die "redis-server on $p does not answer"
            sleep 0.1
        done
    done
    # shellcheck disable=SC2046
    redis-cli --cluster create $(printf '127.0.0.1:%s ' $ports) \
        --cluster-replicas 0 --cluster-yes > "$CLD/create.log" 2>&1 \
        || die "redis-cli --cluster create failed (see $CLD/create.log)"
    for i in $(seq 1 150); do
        cluster_ok && break
        ((i < 150)) || die "the cluster is not ok within 15 s on $ports"
        sleep 0.1
    done
    local c0 c1
    c0=$(cluster_cpu)
    sleep 5
    c1=$(cluster_cpu)
    awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.6f\n", (b - a) / 5 }' \
        > "$CLD/idle-cpu"
    say "cluster: 3 masters on $ports (bus ${bus[*]}), idle CPU" \
        "$(cat "$CLD/idle-cpu") s/s"
}

# cluster_cpu: CPU seconds (user + sys) the 3 nodes used, summed
cluster_cpu() {
    local p
    for p in $(cluster_ports); do
        redis-cli -p "$p" INFO cpu
    done | tr -d '\r' \
        | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

# stop_cluster: the nodes started here (their pid files), by pid
stop_cluster() {
    local d
    for d in "$CLD"/*/; do
        stop_pidfile "$d/redis.pid" TERM
    done
    rm -rf "$CLD"
}
