#!/usr/bin/env bash
# CPU time a server spends per request: user+sys ticks of the given processes
# (and their children) from /proc around one fixed wrk run, divided by the
# requests wrk completed. Comparable across proxies on the same machine even
# when the load generator competes for the same cores.
#
# usage: bench/cpu_per_request.sh "PID [PID...]" URL [extra wrk args, e.g. -H "Authorization: Basic ..."]
# e.g.:  bench/cpu_per_request.sh "$(pgrep -f 'passgate serve')" http://127.0.0.1:8080/x -H "$AUTH"
#        bench/cpu_per_request.sh "$(cat nginx.pid)" http://127.0.0.1:8081/
set -euo pipefail
PIDS="$1"; URL="$2"; shift 2
tick=$(getconf CLK_TCK)
ticks() {
    local t=0 p q
    for p in $PIDS; do
        for q in $p $(pgrep -P "$p" || true); do
            read -r -a f < "/proc/$q/stat"
            t=$((t + f[13] + f[14]))
        done
    done
    echo "$t"
}
before=$(ticks)
out=$(wrk -t2 -c64 -d4s "$@" "$URL")
after=$(ticks)
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
python3 -c "print(f'req/s {float(\"$rps\"):.0f}  cpu/request {($after-$before)/$tick*1e6/$reqs:.1f} us')"
