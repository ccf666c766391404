# shellcheck shell=bash
# Processes the benchmarks start, stopped by pid: sourced by bench/run.sh
# and bench/limit.sh (and used by bench/cluster.sh, which they source
# after it). Not run by itself. The sourcing script defines say.

# alive PID: the process exists and is not a zombie
alive() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

# stop_pidfile FILE SIGNAL [NAME]: the process FILE names gets SIGNAL,
# then SIGKILL if it is still there after 5 s; FILE is removed. NAME,
# when given, is said.
stop_pidfile() {
    local f=$1 pid _
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if [[ -n $pid ]] && alive "$pid"; then
        kill "-$2" "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        [[ -n ${3:-} ]] && say "stopped $3 (pid $pid)"
    fi
    rm -f "$f"
}
