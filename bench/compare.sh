#!/usr/bin/env bash
# passgate against nginx, three ways, same backend (nginx `return 200` with a
# 30-byte JSON body), cached auth, each server with one worker:
#
# 1. user-space instructions per request under callgrind: passgate, nginx
#    auth_basic {SHA} + proxy_pass (keepalive upstream) and nginx plain
#    proxy_pass, each alone under callgrind (nginx with master_process off,
#    one worker), then the floor hyper sets (examples/hyper_floor.rs: a bare
#    hyper proxy, alone and with two timers); wrk -t1 -c4 warms up, the counters are zeroed
#    (callgrind_control -z), a counted run follows and is dumped
#    (callgrind_control -d). Deterministic: load from elsewhere does not move it.
# 2. CPU time per request, user and system apart, outside valgrind: the
#    server's utime/stime from /proc/PID/stat around each wrk run, divided by
#    the requests wrk completed.
# 3. req/s pinned: each server on core $GW_CPU (taskset), the backend and wrk
#    on core $LOAD_CPU; one server loaded at a time, in rotating order, round
#    after round. 2 and 3 come from the same runs; on a shared machine they are
#    noisy, hence min/median/max over the rounds.
#
# usage: bench/compare.sh [seconds] [warm-up seconds]   (default 5 and 2)
# env:   ROUNDS=5 (pinned rounds)  CONNS=16 (pinned wrk connections)
#        GW_CPU=1 LOAD_CPU=0  NGINX=path  ONLY=callgrind|pinned  NO_BUILD=1
# needs valgrind, wrk, nginx, curl, python3, taskset. Keeps the callgrind
# outputs and per-round results in the temp dir it prints.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${1:-5}
WARM=${2:-2}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-16}
MIB_CONNS=${MIB_CONNS:-16}
GW_CPU=${GW_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ONLY=${ONLY:-}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in valgrind callgrind_control callgrind_annotate wrk curl python3 taskset "$NGINX"; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release -q --bin passgate)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/passgate-compare.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
mapfile -t ports < <(python3 "$HERE/lib.py" ports 4)
BP=${ports[0]} PP=${ports[1]} SP=${ports[2]} NP=${ports[3]}

# nginx_conf NAME SERVER-BODY [BACKEND-PORT]: a one-worker nginx in its own prefix.
nginx_conf() {
    local dir="$WORK/$1"
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
master_process off;
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:${3:-$BP}; keepalive 16; }
    server {
$2
    }
}
EOF
}
# start_nginx NAME [wrapper args...]: nginx NAME in its own process group;
# its pid (the wrapper's, which execs or is valgrind) in $LAST.
start_nginx() {
    local name=$1
    shift
    setsid "$@" "$NGINX" -p "$WORK/$name" -c "$WORK/$name/nginx.conf" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST=$!
}
# start_passgate [wrapper args...]. The malloc setting serve would re-exec
# itself with (src/cli/serve.rs), set up front: valgrind does not follow the
# exec. PG_MMAP_THRESHOLD overrides it (an A/B of that setting).
# PG_CONFIG picks another config than $WORK/proxy.toml.
start_passgate() {
    MALLOC_MMAP_THRESHOLD_=${PG_MMAP_THRESHOLD:-1048576} RUST_LOG=warn setsid "$@" \
        "$TARGET_DIR/release/passgate" serve --config "${PG_CONFIG:-$WORK/proxy.toml}" >>"$WORK/passgate.log" 2>&1 &
    PIDS+=($!)
    LAST=$!
}
stop() { # pid
    kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
wait_200() { # url [curl args]
    local url=$1
    shift
    for _ in $(seq 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$@" "$url") == 200 ]] && return 0
        sleep 0.3
    done
    echo "no 200 from $url" >&2
    exit 1
}
# nginx_proxy NAME PORT BACKEND-PORT [sha]: nginx NAME on PORT proxying to the
# backend (keepalive upstream), behind auth_basic {SHA} ($WORK/htpasswd) with `sha`.
nginx_proxy() {
    local auth=''
    [[ ${4:-} == sha ]] && auth="        auth_basic bench;
        auth_basic_user_file $WORK/htpasswd;
"
    nginx_conf "$1" "        listen 127.0.0.1:$2;
$auth        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }" "$3"
}

nginx_conf backend "        listen 127.0.0.1:$BP;
        location / { default_type application/json; return 200 '{\"ok\":true,\"bench\":\"compare\"}'; }"
start_nginx backend taskset -c "$LOAD_CPU"
wait_200 "http://127.0.0.1:$BP/small"

USER_NAME=alice
mkdir -p "$WORK/data"
cat >"$WORK/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$PP"]
workers = 1
[store]
path = "$WORK/data/passgate.redb"
[admin]
socket = "$WORK/data/admin.sock"
$(python3 "$HERE/lib.py" bench-routes "http://127.0.0.1:$BP")
EOF
PW=$("$TARGET_DIR/release/passgate" app-password create --config "$WORK/proxy.toml" \
    --user "$USER_NAME" --name bench --scope repository:read | head -1)
AUTH="Authorization: Basic $(python3 "$HERE/lib.py" b64 "$USER_NAME:$PW")"
# nginx {SHA}: base64 of the raw SHA-1 of the password (htpasswd -s).
SHA=$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha1(sys.argv[1].encode()).digest()).decode())' "$PW")
printf '%s:{SHA}%s\n' "$USER_NAME" "$SHA" >"$WORK/htpasswd"
nginx_proxy sha "$SP" "$BP" sha
nginx_proxy plain "$NP" "$BP"
declare -A URL=(
    [passgate]="http://127.0.0.1:$PP/small"
    [sha]="http://127.0.0.1:$SP/small"
    [plain]="http://127.0.0.1:$NP/small"
)
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# count NAME: instructions per request of the callgrind process $LAST.
count() {
    local name=$1 url=${URL[$1]} vg=$LAST n total outs
    wait_200 "$url" -H "$AUTH"
    wrk -t1 -c4 -d"${WARM}s" -H "$AUTH" "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    n=$(wrk -t1 -c4 -d"${SECS}s" -H "$AUTH" "$url" | awk '/requests in/ {print $1}')
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    outs=("$WORK/$name.callgrind".*) # sorted: the last is the dump after the counted run
    total=$(callgrind_annotate "${outs[-1]}" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    stop "$vg"
    printf 'instr\t%s\t%s\n' "$name" "$((total / n))" >>"$RESULTS"
    echo "$name: $n requests, $total instructions (${outs[-1]})" >&2
}
if [[ -z $ONLY || $ONLY == callgrind ]]; then
    VG=(valgrind --tool=callgrind --dump-instr=no)
    start_passgate "${VG[@]}" --callgrind-out-file="$WORK/passgate.callgrind.%p"
    count passgate
    start_nginx sha "${VG[@]}" --callgrind-out-file="$WORK/sha.callgrind.%p"
    count sha
    start_nginx plain "${VG[@]}" --callgrind-out-file="$WORK/plain.callgrind.%p"
    count plain
    # The floor hyper sets: examples/hyper_floor.rs, a bare hyper proxy built
    # like passgate's HTTP/1.1 path, alone and with passgate's two timers.
    FLOOR=$TARGET_DIR/release/examples/hyper_floor
    [[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release -q --example hyper_floor)
    mapfile -t fports < <(python3 "$HERE/lib.py" ports 2)
    URL[floor]="http://127.0.0.1:${fports[0]}/small"
    URL[floor-timers]="http://127.0.0.1:${fports[1]}/small"
    for variant in floor floor-timers; do
        flag=()
        [[ $variant == floor ]] || flag=(--timers)
        port=${fports[0]}
        [[ $variant == floor ]] || port=${fports[1]}
        setsid "${VG[@]}" --callgrind-out-file="$WORK/$variant.callgrind.%p" \
            "$FLOOR" "$port" "$BP" "${flag[@]}" >"$WORK/$variant.log" 2>&1 &
        PIDS+=($!)
        LAST=$!
        count "$variant"
    done
fi

# cpu PID: "utime stime" in clock ticks, all threads of the process.
cpu() {
    local f
    read -r -a f <"/proc/$1/stat"
    echo "${f[13]} ${f[14]}"
}
# rounds PIDS URLS CONNS LABEL RATE USER SYS CPU -- NAME...: after a warm-up
# of each, $ROUNDS interleaved rounds of wrk -t1 -cCONNS against every named
# target (URL in the array URLS, server PID in the array PIDS), in rotating
# order so that no server always goes first. Appends to $RESULTS, per run,
# "KIND\tNAME\tVALUE" rows: req/s as RATE and the server's user, system and
# total CPU time per request (µs, /proc) as USER, SYS and CPU.
rounds() {
    local -n pids=$1 urls=$2
    local conns=$3 label=$4 kinds=("$5" "$6" "$7" "$8")
    shift 9
    local order=("$@") name round tick u0 s0 u1 s1 out n rps bad
    for name in "${order[@]}"; do
        wait_200 "${urls[$name]}" -H "$AUTH"
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${WARM}s" -H "$AUTH" "${urls[$name]}" >/dev/null
    done
    tick=$(getconf CLK_TCK)
    for round in $(seq "$ROUNDS"); do
        for name in "${order[@]}"; do
            read -r u0 s0 < <(cpu "${pids[$name]}")
            out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${SECS}s" -H "$AUTH" "${urls[$name]}")
            read -r u1 s1 < <(cpu "${pids[$name]}")
            n=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
            [[ -z $bad ]] || { echo "$name answered $bad non-2xx responses" >&2; exit 1; }
            python3 - "$name" "$rps" "$n" "$tick" "$u0" "$s0" "$u1" "$s1" "${kinds[@]}" >>"$RESULTS" <<'ROW'
import sys
name, rps, n, tick, u0, s0, u1, s1, k_rate, k_user, k_sys, k_cpu = sys.argv[1:]
per = lambda a, b: (int(b) - int(a)) / int(tick) * 1e6 / int(n)
for kind, val in [(k_rate, float(rps)), (k_user, per(u0, u1)), (k_sys, per(s0, s1)),
                  (k_cpu, per(u0, u1) + per(s0, s1))]:
    print(f"{kind}\t{name}\t{val}")
ROW
        done
        order=("${order[@]:1}" "${order[0]}")
        echo "${label}round $round of $ROUNDS done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    done
}
if [[ -z $ONLY || $ONLY == pinned ]]; then
    declare -A PID
    start_passgate taskset -c "$GW_CPU"
    PID[passgate]=$LAST
    start_nginx sha taskset -c "$GW_CPU"
    PID[sha]=$LAST
    start_nginx plain taskset -c "$GW_CPU"
    # shellcheck disable=SC2034 # PID is read through rounds' nameref
    PID[plain]=$LAST
    rounds PID URL "$CONNS" "" rps user sys cpu -- passgate sha plain
fi

# 4. 1 MiB responses, two backends: an nginx serving a static 1 MiB file with
#    sendfile (cheap: the proxies become the bottleneck), and the project's
#    hyper backend (examples/bench_backend.rs, what bench/run.sh uses). One
#    passgate per backend (same store copied, so the same password); one nginx
#    with {SHA} and plain servers per backend, nginx's default proxy buffering.
#    Servers on core $GW_CPU, backend and wrk -t1 -c$MIB_CONNS on $LOAD_CPU;
#    each round loads every target once, in rotating order. Per target: MiB/s
#    and the server's CPU time (user + system, /proc) per MiB served.
if [[ -z $ONLY || $ONLY == 1m ]]; then
    HYPER=$TARGET_DIR/release/examples/bench_backend
    [[ -n ${NO_BUILD:-} ]] || (cd "$ROOT" && cargo build --release -q --example bench_backend)
    mapfile -t mports < <(python3 "$HERE/lib.py" ports 8)
    STP=${mports[0]} HYP=${mports[1]} PSP=${mports[2]} PHP=${mports[3]}
    NSS=${mports[4]} NSH=${mports[5]} NPL=${mports[6]} NPH=${mports[7]}
    mkdir -p "$WORK/static"
    head -c $((1 << 20)) /dev/zero | tr '\0' x >"$WORK/static/1m"
    nginx_conf static "        listen 127.0.0.1:$STP;
        sendfile on;
        location / { root $WORK/static; }"
    declare -A PID1M URL1M
    start_nginx static taskset -c "$LOAD_CPU"
    PID1M[direct-static]=$LAST
    setsid taskset -c "$LOAD_CPU" "$HYPER" "$HYP" >"$WORK/hyper.log" 2>&1 &
    PIDS+=($!)
    PID1M[direct-hyper]=$!
    URL1M[direct-static]="http://127.0.0.1:$STP/1m"
    URL1M[direct-hyper]="http://127.0.0.1:$HYP/1m"
    wait_200 "${URL1M[direct-static]}"
    wait_200 "${URL1M[direct-hyper]}"
    for b in static hyper; do
        bport=$STP
        [[ $b == hyper ]] && bport=$HYP
        pport=$PSP
        [[ $b == hyper ]] && pport=$PHP
        mkdir -p "$WORK/data-$b"
        cp "$WORK/data/passgate.redb" "$WORK/data-$b/"
        cat >"$WORK/proxy-$b.toml" <<TOML
[server]
listen = ["127.0.0.1:$pport"]
workers = 1
[store]
path = "$WORK/data-$b/passgate.redb"
[admin]
socket = "$WORK/data-$b/admin.sock"
$(python3 "$HERE/lib.py" bench-routes "http://127.0.0.1:$bport")
TOML
        PG_CONFIG=$WORK/proxy-$b.toml start_passgate taskset -c "$GW_CPU"
        PID1M[passgate-$b]=$LAST
        URL1M[passgate-$b]="http://127.0.0.1:$pport/1m"
    done
    nginx_proxy sha1m-static "$NSS" "$STP" sha
    nginx_proxy sha1m-hyper "$NSH" "$HYP" sha
    nginx_proxy plain1m-static "$NPL" "$STP"
    nginx_proxy plain1m-hyper "$NPH" "$HYP"
    for b in static hyper; do
        start_nginx "sha1m-$b" taskset -c "$GW_CPU"
        PID1M[sha-$b]=$LAST
        start_nginx "plain1m-$b" taskset -c "$GW_CPU"
        # shellcheck disable=SC2034 # PID1M is read through rounds' nameref
        PID1M[plain-$b]=$LAST
    done
    URL1M[sha-static]="http://127.0.0.1:$NSS/1m"
    URL1M[sha-hyper]="http://127.0.0.1:$NSH/1m"
    URL1M[plain-static]="http://127.0.0.1:$NPL/1m"
    URL1M[plain-hyper]="http://127.0.0.1:$NPH/1m"
    # Each response is 1 MiB: req/s is MiB/s; CPU in µs per MiB.
    rounds PID1M URL1M "$MIB_CONNS" "1 MiB " mib muser msys mcpu -- passgate-static sha-static plain-static direct-static passgate-hyper sha-hyper plain-hyper direct-hyper
fi

python3 - "$RESULTS" "$SECS" "$ROUNDS" "$CONNS" "$GW_CPU" "$LOAD_CPU" "$MIB_CONNS" <<'EOF'
import statistics, sys
from collections import defaultdict
path, secs, rounds, conns, gw, load, mib_conns = sys.argv[1:]
v = defaultdict(list)
for line in open(path):
    kind, name, val = line.split("\t")
    v[kind, name].append(float(val))
names = [("passgate", "passgate (app-password, cached)"),
         ("sha", "nginx auth_basic {SHA} + proxy_pass"),
         ("plain", "nginx plain proxy_pass")]

def row(kind, label, fmt, spread, lower_better=True):
    if not v[kind, "passgate"]:
        return
    print(f"\n{label}")
    pg = statistics.median(v[kind, "passgate"])
    for key, desc in names:
        xs = v[kind, key]
        med = statistics.median(xs)
        text = f"  {desc:<37} {fmt(med):>9}"
        if spread and len(xs) > 1:
            text += f"  (min {fmt(min(xs))}, max {fmt(max(xs))})"
        if key != "passgate" and med:
            text += f"   passgate / this = {pg / med:.2f}x"
        print(text)

row("instr", "user-space instructions per request (callgrind, wrk -t1 -c4, deterministic)",
    lambda x: f"{x:,.0f}", False)
if v["instr", "floor"] and v["instr", "sha"]:
    print("\nthe floor hyper sets (examples/hyper_floor.rs, same load), instructions per request")
    sha = statistics.median(v["instr", "sha"])
    pg = statistics.median(v["instr", "passgate"])
    for key, desc in [("floor", "bare hyper proxy"),
                      ("floor-timers", "bare hyper proxy + the two timers")]:
        med = statistics.median(v["instr", key])
        print(f"  {desc:<37} {med:>9,.0f}   this / nginx {{SHA}} = {med / sha:.2f}x"
              f"   passgate - this = {pg - med:,.0f}")
    print(f"  1.3x nginx {{SHA}} (issue 18's target)  {1.3 * sha:>9,.0f}")
note = f"pinned: server on core {gw}, wrk -t1 -c{conns} + backend on core {load}; " \
       f"{rounds} rounds x {secs} s, median (min, max); noisy on a shared machine"
if v["rps", "passgate"]:
    print(f"\n{note}")
row("user", "user CPU per request, us", lambda x: f"{x:.2f}", True)
row("sys", "system CPU per request, us", lambda x: f"{x:.2f}", True)
row("cpu", "user + system CPU per request, us", lambda x: f"{x:.2f}", True)
row("rps", "requests per second", lambda x: f"{x:,.0f}", True)

if v["mib", "passgate-static"]:
    print(f"\n1 MiB responses: server on core {gw}, wrk -t1 -c{mib_conns} + backend on core {load}; "
          f"{rounds} rounds x {secs} s, median (min, max)")
    for b, desc in [("static", "backend: nginx, static 1 MiB file, sendfile on"),
                    ("hyper", "backend: examples/bench_backend.rs (hyper, as in bench/run.sh)")]:
        print(f"\n  {desc}")
        for kind, label, fmt in [("mib", "MiB/s", lambda x: f"{x:,.0f}"),
                                 ("mcpu", "CPU (user + system) per MiB, us", lambda x: f"{x:,.0f}"),
                                 ("muser", "  of which user", lambda x: f"{x:,.0f}"),
                                 ("msys", "  of which system", lambda x: f"{x:,.0f}")]:
            print(f"    {label}")
            pg = statistics.median(v[kind, f"passgate-{b}"])
            for key, name in [("passgate", "passgate"), ("sha", "nginx {SHA} + proxy_pass"),
                              ("plain", "nginx plain proxy_pass"), ("direct", "direct (the backend's own CPU)")]:
                xs = v[kind, f"{key}-{b}"]
                if not xs:
                    continue
                med = statistics.median(xs)
                text = f"      {name:<32} {fmt(med):>8}  (min {fmt(min(xs))}, max {fmt(max(xs))})"
                if key in ("sha", "plain") and med:
                    text += f"   passgate / this = {pg / med:.2f}x"
                print(text)
EOF
echo "callgrind outputs and per-round results: $WORK"
