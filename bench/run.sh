#!/usr/bin/env bash
# passgate benchmark harness: one command, one machine, one table.
#
#   bench/run.sh [--quick] [--no-build] [scenario...]
#
# Scenarios (default: all, always run in this order):
#   h1-cached  h1-1m  h2-cached  uncached  flood  stream  git-clone  idle
#
# Starts a loopback backend (examples/bench_backend.rs), passgate (release),
# nginx and Caddy with generated configs in a temp dir, drives them with wrk /
# h2load / curl / git, and prints one markdown table (also written to
# bench/out/latest.md). Every process it starts is killed on exit.
# See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PASSGATE=$TARGET_DIR/release/passgate
BACKEND=$TARGET_DIR/release/examples/bench_backend
OUT_DIR=$HERE/out

ALL_SCENARIOS=(h1-cached h1-1m h2-cached uncached flood stream git-clone idle)
DUR=5            # seconds per load run
REPS=3           # repetitions per measurement (median reported)
CONNS=64         # HTTP/1.1 connections (wrk)
MIB_CONNS=16     # connections for the 1 MiB responses
H2_CONNS=16      # HTTP/2 connections (h2load)
H2_STREAMS=8     # concurrent streams per HTTP/2 connection
UNCACHED_CONNS=8
UNCACHED_PASSWORDS=50
VALID_CONNS=4    # the well-behaved client during a flood: connections...
VALID_RPS=500    # ...each at this many requests per second
VALID_DESC="h2load --h1, $VALID_CONNS conns x $VALID_RPS req/s"
IDLE_CONNS=10000
GIT_COMMITS=5
GIT_MIB_PER_COMMIT=20
GIT_REPS=5       # clones per side (alternating)
BUILD=1

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

selected=()
while (($#)); do
    case $1 in
        --quick)
            DUR=2 REPS=1 IDLE_CONNS=1000 GIT_COMMITS=2 GIT_MIB_PER_COMMIT=5 GIT_REPS=1
            QUICK=1
            ;;
        --no-build) BUILD=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            echo "unknown option: $1" >&2
            usage >&2
            exit 2
            ;;
        *)
            known=0
            for s in "${ALL_SCENARIOS[@]}"; do [[ $s == "$1" ]] && known=1; done
            if ((!known)); then
                echo "unknown scenario: $1 (known: ${ALL_SCENARIOS[*]})" >&2
                exit 2
            fi
            selected+=("$1")
            ;;
    esac
    shift
done
QUICK=${QUICK:-0}
((${#selected[@]})) || selected=("${ALL_SCENARIOS[@]}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/passgate-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
NOTES=$WORK/notes.txt
: >"$RESULTS"
: >"$NOTES"
PIDS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        # Each server was started with setsid: its process group is its own.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ -n ${BENCH_KEEP:-} ]]; then
        echo "[bench] kept work dir $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[bench] $*" >&2; }
note() {
    echo "- $*" >>"$NOTES"
    log "note: $*"
}
have() { command -v "$1" >/dev/null 2>&1; }
lib() { python3 "$HERE/lib.py" "$@"; }
record() { lib record "$RESULTS" "$@"; }

# Starts a server in its own process group; sets LAST_PID.
spawn() {
    local name=$1
    shift
    setsid "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_port() {
    local port=$1 pid=${2:-} deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

port() { lib ports 1; }

# HTTP status of one request (extra curl args after the URL).
status_of() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

# ---------------------------------------------------------------------------
# Servers

BACKEND_PORT=
ensure_backend() {
    [[ -n $BACKEND_PORT ]] && return
    BACKEND_PORT=$(port)
    spawn backend "$BACKEND" "$BACKEND_PORT"
    wait_port "$BACKEND_PORT" "$LAST_PID" || {
        cat "$WORK/backend.log" >&2
        echo "bench_backend did not start" >&2
        exit 1
    }
}

declare -A PG_PORT PG_PID PG_PW PG_AUTH PG_CFG

# start_passgate NAME UPSTREAM_URL RUST_LOG [CACHE_TTL [extra [auth] lines]]
start_passgate() {
    local name=$1 upstream=$2 level=$3 ttl=${4:-30s} auth_extra=${5:-}
    [[ -n ${PG_PORT[$name]:-} ]] && return
    local dir=$WORK/pg-$name
    mkdir -p "$dir/data"
    local p
    p=$(port)
    cat >"$dir/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$p"]
header_read_timeout = "120s"
idle_timeout = "120s"
# Every load comes from 127.0.0.1, and the idle scenario holds 10,000.
max_connections = 20000
max_connections_per_addr = 20000

[store]
path = "data/passgate.redb"

[admin]
socket = "data/admin.sock"

[auth]
cache_ttl = "$ttl"
$auth_extra

$(lib bench-routes "$upstream")
EOF
    local pw
    pw=$("$PASSGATE" app-password create --config "$dir/proxy.toml" --user alice --name bench \
        --scope repository:read --json 2>"$dir/create.err" | lib json-field password) || {
        cat "$dir/create.err" >&2
        echo "passgate app-password create failed for instance $name" >&2
        exit 1
    }
    RUST_LOG=$level spawn "pg-$name" "$PASSGATE" serve --config "$dir/proxy.toml"
    PG_PID[$name]=$LAST_PID
    wait_port "$p" "$LAST_PID" || {
        cat "$WORK/pg-$name.log" >&2
        echo "passgate instance $name did not start" >&2
        exit 1
    }
    PG_PORT[$name]=$p
    PG_PW[$name]=$pw
    PG_AUTH[$name]="Basic $(lib b64 "alice:$pw")"
    PG_CFG[$name]=$dir/proxy.toml
    local code
    code=$(status_of "http://127.0.0.1:$p${PG_CHECK_PATH:-/small}" -H "Authorization: ${PG_AUTH[$name]}")
    [[ $code == 200 ]] || {
        cat "$WORK/pg-$name.log" >&2
        echo "passgate instance $name answers $code, not 200" >&2
        exit 1
    }
}

pg() {
    ensure_backend
    case $1 in
        main) start_passgate main "http://127.0.0.1:$BACKEND_PORT" warn ;;
        info) start_passgate info "http://127.0.0.1:$BACKEND_PORT" info ;;
        uncached) start_passgate uncached "http://127.0.0.1:$BACKEND_PORT" warn 1ms ;;
        norl | rl | stream | idle)
            local extra=''
            [[ $1 == norl ]] && extra='[auth.rate_limit]
per_user_addr = { burst = 1000000000, per = "1s" }
per_addr = { burst = 1000000000, per = "1s" }'
            # `rl` keeps the default limits, on its own instance so that the
            # exhausted buckets do not spill into other scenarios.
            start_passgate "$1" "http://127.0.0.1:$BACKEND_PORT" warn 30s "$extra"
            ;;
        *)
            echo "unknown passgate instance $1" >&2
            exit 1
            ;;
    esac
}

# nginx_temp_paths DIR: an nginx http block's temp directories, all under DIR
# (each bench nginx runs from its own prefix, never the system's).
nginx_temp_paths() {
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/%s;\n' "$t" "$1" "${t#client_}"
    done
}

# A second 1 MiB backend: nginx serving a static 1 MiB file with sendfile, so
# cheap that the proxies in front of it become the bottleneck (issue 18).
STATIC_PORT=
ensure_static() {
    [[ -n $STATIC_PORT ]] && return 0
    have nginx || return 1
    local dir=$WORK/static
    mkdir -p "$dir/logs" "$dir/tmp" "$dir/www"
    head -c $((1 << 20)) /dev/zero | tr '\0' x >"$dir/www/1m"
    local p user_line=''
    p=$(port)
    (($(id -u) == 0)) && user_line="user $(id -un) $(id -gn);"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
$(nginx_temp_paths "$dir/tmp")
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$p;
        location / { root $dir/www; }
    }
}
EOF
    spawn static nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    wait_port "$p" "$LAST_PID" || {
        cat "$WORK/static.log" "$dir/logs/error.log" >&2 || true
        note "static nginx backend did not start: its 1 MiB rows skipped"
        return 1
    }
    STATIC_PORT=$p
}

# nginx_server LISTEN UPSTREAM [HTPASSWD [DIRECTIVE]]: one server block of the
# bench nginx: proxy_pass to UPSTREAM, behind auth_basic when HTPASSWD is given.
nginx_server() {
    printf '    server {\n        listen 127.0.0.1:%s;\n' "$1"
    [[ -n ${4:-} ]] && printf '        %s\n' "$4"
    [[ -n ${3:-} ]] && printf '        auth_basic "passgate-bench";\n        auth_basic_user_file %s;\n' "$3"
    printf '        location / { proxy_pass http://%s; }\n    }\n' "$2"
}

# The same user and password as passgate's `main` instance, in htpasswd files.
NGINX_PORTS=()
ensure_nginx() {
    [[ ${#NGINX_PORTS[@]} -gt 0 ]] && return 0
    if ! have nginx; then
        note "nginx not installed: nginx targets skipped"
        return 1
    fi
    if ! have htpasswd; then
        note "htpasswd (apache2-utils) not installed: nginx targets skipped"
        return 1
    fi
    pg main
    ensure_static || return 1
    local dir=$WORK/nginx
    mkdir -p "$dir/logs" "$dir/tmp"
    htpasswd -c -b -s "$dir/htpasswd.sha" alice "${PG_PW[main]}" 2>/dev/null
    htpasswd -c -b -m "$dir/htpasswd.apr1" alice "${PG_PW[main]}" 2>/dev/null
    local ps
    mapfile -t ps < <(lib ports 7)
    local user_line=''
    (($(id -u) == 0)) && user_line="user $(id -un) $(id -gn);"
    # ps (NGINX_PORTS): 0 {SHA}, 1 $apr1$, 2 no auth, 3 h2c {SHA}, 4 {SHA}
    # with access_log, 5 and 6 {SHA} and no auth before the static backend.
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes auto;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_max_body_size 0;
$(nginx_temp_paths "$dir/tmp")
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 100000000;
    }
    upstream static {
        server 127.0.0.1:$STATIC_PORT;
        keepalive 64;
        keepalive_requests 100000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
$(nginx_server "${ps[0]}" backend "$dir/htpasswd.sha")
$(nginx_server "${ps[1]}" backend "$dir/htpasswd.apr1")
$(nginx_server "${ps[2]}" backend)
$(nginx_server "${ps[3]} http2" backend "$dir/htpasswd.sha")
$(nginx_server "${ps[4]}" backend "$dir/htpasswd.sha" "access_log $dir/logs/access.log;")
$(nginx_server "${ps[5]}" static "$dir/htpasswd.sha")
$(nginx_server "${ps[6]}" static)
}
EOF
    spawn nginx nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    local p
    for p in "${ps[@]}"; do
        wait_port "$p" "$LAST_PID" || {
            cat "$WORK/nginx.log" "$dir/logs/error.log" >&2 || true
            note "nginx did not start: nginx targets skipped"
            return 1
        }
    done
    NGINX_PORTS=("${ps[@]}")
}

CADDY_PORT=
ensure_caddy() {
    [[ -n $CADDY_PORT ]] && return 0
    if ! have caddy; then
        note "caddy not installed: Caddy targets skipped"
        return 1
    fi
    pg main
    local dir=$WORK/caddy hash
    mkdir -p "$dir/home"
    hash=$(caddy hash-password --plaintext "${PG_PW[main]}" 2>/dev/null | tail -1)
    CADDY_PORT=$(port)
    cat >"$dir/Caddyfile" <<EOF
{
    admin off
    auto_https off
    servers {
        protocols h1 h2c
    }
}
http://127.0.0.1:$CADDY_PORT {
    basicauth {
        alice $hash
    }
    reverse_proxy 127.0.0.1:$BACKEND_PORT {
        transport http {
            keepalive_idle_conns_per_host 64
        }
    }
}
EOF
    HOME=$dir/home XDG_DATA_HOME=$dir/home XDG_CONFIG_HOME=$dir/home \
        spawn caddy caddy run --config "$dir/Caddyfile" --adapter caddyfile
    wait_port "$CADDY_PORT" "$LAST_PID" || {
        cat "$WORK/caddy.log" >&2
        note "caddy did not start: Caddy targets skipped"
        CADDY_PORT=
        return 1
    }
}

# ---------------------------------------------------------------------------
# Load drivers: each prints the median JSON of REPS runs.

# run_wrk LABEL URL AUTH CONNS [extra wrk args...]
run_wrk() {
    local label=$1 url=$2 auth=$3 conns=$4
    shift 4
    local runs=() r f
    for r in $(seq "$REPS"); do
        f=$WORK/wrk-$label-$r.txt
        local hdr=()
        [[ -n $auth ]] && hdr=(-H "Authorization: $auth")
        wrk -t2 -c"$conns" -d"${DUR}s" --latency "${hdr[@]}" "$@" "$url" >"$f" 2>&1 || true
        runs+=("$(lib wrk "$f")")
    done
    lib median "${runs[@]}"
}

# run_h2load LABEL URL AUTH
run_h2load() {
    local label=$1 url=$2 auth=$3
    local runs=() r f
    for r in $(seq "$REPS"); do
        f=$WORK/h2load-$label-$r
        h2load -t2 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DUR" -H "authorization: $auth" \
            --log-file="$f.log" "$url" >"$f.txt" 2>&1 || true
        runs+=("$(lib h2load "$f.txt" "$f.log")")
    done
    lib median "${runs[@]}"
}

# A note for a load result: failures and the status mix, when not all 2xx.
load_note() { lib note "$1" "$2"; }

# ---------------------------------------------------------------------------
# Scenarios

scenario_h1-cached() {
    local s=h1-cached
    have wrk || { note "wrk not installed: $s skipped"; return; }
    ensure_backend
    pg main
    pg info
    # label|role|url|auth|note
    local targets=(
        "direct backend|direct|http://127.0.0.1:$BACKEND_PORT/small||no proxy"
        "passgate||http://127.0.0.1:${PG_PORT[main]}/small|${PG_AUTH[main]}|argon2id m=19456 t=2 p=1, cache_ttl 30s, RUST_LOG=warn"
        "passgate RUST_LOG=info||http://127.0.0.1:${PG_PORT[info]}/small|${PG_AUTH[info]}|one access-log line per request, stderr to a file"
    )
    if ensure_nginx; then
        targets+=(
            "nginx auth_basic {SHA}|nginx|http://127.0.0.1:${NGINX_PORTS[0]}/small|${PG_AUTH[main]}|htpasswd -s (unsalted SHA-1, verified per request)"
            "nginx auth_basic {SHA}, access_log on||http://127.0.0.1:${NGINX_PORTS[4]}/small|${PG_AUTH[main]}|combined format to a file: compare with passgate RUST_LOG=info"
            "nginx auth_basic \$apr1\$||http://127.0.0.1:${NGINX_PORTS[1]}/small|${PG_AUTH[main]}|htpasswd -m (MD5 x1000, verified per request)"
            "nginx proxy_pass, no auth||http://127.0.0.1:${NGINX_PORTS[2]}/small||upstream keepalive 64"
        )
    fi
    if ensure_caddy; then
        targets+=("caddy basicauth||http://127.0.0.1:$CADDY_PORT/small|${PG_AUTH[main]}|bcrypt (caddy hash-password default cost); at this rate Caddy must cache successful verifications")
    fi
    interleaved_h1 $s "${targets[@]}"
}

# interleaved_h1 SCENARIO "label|role|url|auth|note"...: REPS rounds of one
# wrk run per target, so drift on a shared machine falls on every target alike;
# each target's row is the median of its runs.
interleaved_h1() {
    local scenario=$1
    shift
    local t label role url auth nt code r f live=()
    declare -A by_label=()
    for t in "$@"; do
        IFS='|' read -r label role url auth nt <<<"$t"
        local hdr=()
        [[ -n $auth ]] && hdr=(-H "Authorization: $auth")
        code=$(status_of "$url" "${hdr[@]}")
        if [[ $code != 200 ]]; then
            note "$scenario/$label: sanity request answered $code, not 200: skipped"
            continue
        fi
        live+=("$t")
    done
    for r in $(seq "$REPS"); do
        for t in "${live[@]}"; do
            IFS='|' read -r label role url auth nt <<<"$t"
            local hdr=()
            [[ -n $auth ]] && hdr=(-H "Authorization: $auth")
            log "$scenario: $label (wrk -c$CONNS, ${DUR}s, round $r/$REPS)"
            f=$WORK/wrk-$scenario-${label//[^A-Za-z0-9]/_}-$r.txt
            wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "${hdr[@]}" "$url" >"$f" 2>&1 || true
            by_label[$label]+="$(lib wrk "$f")"$'\n'
        done
    done
    for t in "${live[@]}"; do
        IFS='|' read -r label role url auth nt <<<"$t"
        local each=() med line
        while IFS= read -r line; do
            [[ -n $line ]] && each+=("$line")
        done <<<"${by_label[$label]}"
        med=$(lib median "${each[@]}")
        record scenario="$scenario" target="$label" role="$role" unit=req/s \
            note="$(load_note "$med" "$nt")" json="$med"
    done
}

scenario_h1-1m() {
    local s=h1-1m
    have wrk || { note "wrk not installed: $s skipped"; return; }
    ensure_backend
    pg main
    local targets=(
        "direct backend, 1 MiB|direct|http://127.0.0.1:$BACKEND_PORT/1m||no proxy"
        "passgate, 1 MiB||http://127.0.0.1:${PG_PORT[main]}/1m|${PG_AUTH[main]}|cached auth, RUST_LOG=warn"
    )
    if ensure_nginx; then
        targets+=(
            "nginx auth_basic {SHA}, 1 MiB|nginx|http://127.0.0.1:${NGINX_PORTS[0]}/1m|${PG_AUTH[main]}|default proxy buffering"
            "nginx proxy_pass, no auth, 1 MiB||http://127.0.0.1:${NGINX_PORTS[2]}/1m||default proxy buffering"
        )
    fi
    CONNS=$MIB_CONNS interleaved_h1 $s "${targets[@]}"
    # The same against the static-file backend (bench_backend is a hyper
    # server: slower than nginx's sendfile, which flatters the proxies).
    ensure_nginx || return 0
    PG_CHECK_PATH=/1m start_passgate static "http://127.0.0.1:$STATIC_PORT" warn
    targets=(
        "direct static nginx, 1 MiB|direct|http://127.0.0.1:$STATIC_PORT/1m||nginx, static file, sendfile on"
        "passgate, static backend, 1 MiB||http://127.0.0.1:${PG_PORT[static]}/1m|${PG_AUTH[static]}|cached auth, RUST_LOG=warn"
        "nginx auth_basic {SHA}, static backend, 1 MiB|nginx|http://127.0.0.1:${NGINX_PORTS[5]}/1m|${PG_AUTH[main]}|default proxy buffering"
        "nginx proxy_pass, no auth, static backend, 1 MiB||http://127.0.0.1:${NGINX_PORTS[6]}/1m||default proxy buffering"
    )
    CONNS=$MIB_CONNS interleaved_h1 $s-static "${targets[@]}"
}

scenario_h2-cached() {
    local s=h2-cached
    have h2load || { note "h2load (nghttp2-client) not installed: $s skipped"; return; }
    pg main
    local targets=("passgate h2c|http://127.0.0.1:${PG_PORT[main]}/small|")
    if ensure_nginx; then
        targets+=("nginx h2c auth_basic {SHA}|http://127.0.0.1:${NGINX_PORTS[3]}/small|nginx")
    fi
    if ensure_caddy; then
        targets+=("caddy h2c basicauth|http://127.0.0.1:$CADDY_PORT/small|")
    fi
    local t name url role code med
    for t in "${targets[@]}"; do
        IFS='|' read -r name url role <<<"$t"
        code=$(status_of "$url" --http2-prior-knowledge -H "Authorization: ${PG_AUTH[main]}")
        if [[ $code != 200 ]]; then
            note "$s/$name: sanity h2c request answered $code: skipped"
            continue
        fi
        log "$s: $name (h2load -c$H2_CONNS -m$H2_STREAMS, ${REPS}x${DUR}s)"
        med=$(run_h2load "$s-${name// /_}" "$url" "${PG_AUTH[main]}")
        record scenario=$s target="$name" role="$role" unit=req/s \
            note="$(load_note "$med" "prior-knowledge h2c, $H2_CONNS conns x $H2_STREAMS streams")" json="$med"
    done
}

scenario_uncached() {
    local s=uncached
    have wrk || { note "wrk not installed: $s skipped"; return; }
    pg uncached
    local cfg=${PG_CFG[uncached]} auths=$WORK/uncached-auths.txt i pw
    log "$s: creating $UNCACHED_PASSWORDS app passwords through the admin socket"
    : >"$auths"
    for i in $(seq "$UNCACHED_PASSWORDS"); do
        pw=$("$PASSGATE" app-password create --config "$cfg" --user alice --name "u$i" \
            --scope repository:read 2>/dev/null | head -1)
        echo "Basic $(lib b64 "alice:$pw")" >>"$auths"
    done
    local med
    log "$s: first-time verifications (cache_ttl 1ms, wrk -c$UNCACHED_CONNS, ${REPS}x${DUR}s)"
    med=$(BENCH_AUTH_FILE=$auths run_wrk $s "http://127.0.0.1:${PG_PORT[uncached]}/small" "" \
        "$UNCACHED_CONNS" -s "$HERE/wrk.lua")
    record scenario=$s target="passgate argon2id verifications" role="" unit=verif/s \
        note="$(load_note "$med" "$UNCACHED_PASSWORDS passwords rotated, cache_ttl 1ms, m=19456 t=2 p=1, $(nproc) verify threads")" \
        json="$med"
}

# paced_once LABEL URL AUTH: one run of the well-behaved client at a fixed
# rate (h2load --rps, HTTP/1.1, one request in flight per connection), so its
# latency is measured instead of its share of a saturated machine.
paced_once() {
    local f=$WORK/paced-$1-$RANDOM
    h2load --h1 -c"$VALID_CONNS" -m1 --rps "$VALID_RPS" -D "$DUR" -H "authorization: $3" \
        --log-file="$f.log" "$2" >"$f.txt" 2>&1 || true
    lib h2load "$f.txt" "$f.log"
}

# record_valid GROUP TARGET ROLE MEDIAN_JSON NOTE: a valid-client row whose
# value is its p99, so "× direct" is the ratio to the calm p99.
record_valid() {
    local p99
    p99=$(lib json-field p99 <<<"$4")
    record scenario=flood group="$1" target="$2" role="$3" unit="ms p99" value="$p99" \
        note="$(load_note "$4" "$5")" json="$4"
}

# flood_pair GROUP URL VALID_AUTH FLOOD_LABEL VALID_LABEL [flood auth header | flood auth file]
flood_pair() {
    local group=$1 url=$2 vauth=$3 flabel=$4 vlabel=$5 fauth=$6 ffile=${7:-}
    local fr=() vr=() r fout
    log "flood: $flabel (wrk -c$CONNS) + valid client, ${REPS}x${DUR}s"
    for r in $(seq "$REPS"); do
        fout=$WORK/flood-${flabel//[^a-z]/_}-$r.txt
        local hdr=()
        [[ -n $fauth ]] && hdr=(-H "Authorization: $fauth")
        BENCH_AUTH_FILE=$ffile wrk -t1 -c"$CONNS" -d"$((DUR + 1))s" --latency "${hdr[@]}" \
            -s "$HERE/wrk.lua" "$url" >"$fout" 2>&1 &
        local fpid=$!
        sleep 0.5
        vr+=("$(paced_once "$group" "$url" "$vauth")")
        wait "$fpid" || true
        fr+=("$(lib wrk "$fout")")
    done
    local fm
    fm=$(lib median "${fr[@]}")
    record scenario=flood group="$group-flood-rate" target="$flabel" role="" unit=resp/s \
        note="$(load_note "$fm" "$CONNS conns, answered at this rate")" json="$fm"
    record_valid "$group" "$vlabel" "" "$(lib median "${vr[@]}")" "$VALID_DESC, same address as the flood"
}

# calm_valid GROUP URL AUTH TARGET NOTE [busy]: the valid client alone, or
# beside two CPU-bound busy loops (no traffic to the proxy: the p99 this
# machine gives any latency-sensitive process once both cores are saturated).
calm_valid() {
    local group=$1 url=$2 auth=$3 target=$4 nt=$5 busy=${6:-} runs=() r hogs
    log "flood: $target, ${REPS}x${DUR}s"
    for r in $(seq "$REPS"); do
        hogs=()
        if [[ -n $busy ]]; then
            yes >/dev/null & hogs+=($!)
            yes >/dev/null & hogs+=($!)
        fi
        runs+=("$(paced_once "$group" "$url" "$auth")")
        ((${#hogs[@]})) && { kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null || true; }
    done
    local role=''
    [[ -z $busy ]] && role=direct
    record_valid "$group" "$target" "$role" "$(lib median "${runs[@]}")" "$nt"
}

scenario_flood() {
    local s=flood
    have wrk || { note "wrk not installed: $s skipped"; return; }
    have h2load || { note "h2load (nghttp2-client) not installed: $s skipped"; return; }
    pg norl
    local url="http://127.0.0.1:${PG_PORT[norl]}/small" auth=${PG_AUTH[norl]}
    calm_valid valid "$url" "$auth" "passgate: valid client, calm" "$VALID_DESC; rate limits disabled"
    calm_valid valid "$url" "$auth" "passgate: valid client beside two busy loops" \
        "no flood: 2 x yes(1) saturate both cores (this machine's floor for any loaded run)" busy
    local garbage fakes=$WORK/fake-auths.txt t
    garbage="Basic $(lib b64 alice:pgap_garbage)"
    flood_pair valid "$url" "$auth" "passgate: malformed-token flood, no rate limit" \
        "passgate: valid client under malformed flood" "$garbage"
    : >"$fakes"
    while read -r t; do echo "Basic $(lib b64 "alice:$t")" >>"$fakes"; done < <(lib fake-tokens 64)
    flood_pair valid "$url" "$auth" "passgate: well-formed unknown-id flood, no rate limit" \
        "passgate: valid client under well-formed flood" "" "$fakes"
    pg rl
    # Only shows what the limiter answers: one run is enough.
    REPS=1 flood_pair valid-rl "http://127.0.0.1:${PG_PORT[rl]}/small" "${PG_AUTH[rl]}" \
        "passgate: malformed-token flood, default rate limits" \
        "passgate: valid client under malformed flood, default rate limits" "$garbage"
    if ensure_nginx; then
        local nurl="http://127.0.0.1:${NGINX_PORTS[0]}/small"
        calm_valid nginx "$nurl" "${PG_AUTH[main]}" "nginx {SHA}: valid client, calm" "$VALID_DESC"
        flood_pair nginx "$nurl" "${PG_AUTH[main]}" "nginx {SHA}: wrong-password flood" \
            "nginx {SHA}: valid client under wrong-password flood" "Basic $(lib b64 alice:wrong)"
    fi
}

scenario_stream() {
    local s=stream
    have curl || { note "curl not installed: $s skipped"; return; }
    pg stream
    local pid=${PG_PID[stream]} p=${PG_PORT[stream]} pw=${PG_PW[stream]}
    local base_hwm
    read -r _ base_hwm < <(lib rss "$pid")
    local kind target url r speed res out=$WORK/stream-body
    for kind in download upload; do
        for target in direct passgate nginx; do
            case $target in
                direct) url=http://127.0.0.1:$BACKEND_PORT auth=() ;;
                passgate) url=http://127.0.0.1:$p auth=(-u "alice:$pw") ;;
                nginx)
                    ensure_nginx || continue
                    url=http://127.0.0.1:${NGINX_PORTS[2]} auth=()
                    ;;
            esac
            local speeds=()
            log "$s: 1 GiB $kind, $target (${REPS}x)"
            for r in $(seq "$REPS"); do
                if [[ $kind == download ]]; then
                    res=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url/1g")
                else
                    res=$(head -c 1G /dev/zero | curl -s "${auth[@]}" -X POST -T - \
                        -H 'Transfer-Encoding: chunked' -H 'Expect:' -o "$out" \
                        -w '%{http_code} %{size_upload} %{speed_upload}' "$url/upload")
                    [[ $(tr -d '\n' <"$out") == 1073741824 ]] ||
                        note "$s: $kind via $target: backend counted $(tr -d '\n' <"$out") bytes"
                fi
                read -r code size speed <<<"$res"
                if [[ $code != 200 || ($kind == download && $size != 1073741824) ]]; then
                    note "$s: $kind via $target: status $code, $size bytes"
                fi
                speeds+=("{\"rps\": $(awk -v b="$speed" 'BEGIN{print b/1048576}')}")
            done
            local role=''
            [[ $target == direct ]] && role=direct
            local nt="curl, HTTP/1.1"
            [[ $target == nginx ]] && nt="curl, HTTP/1.1; nginx proxy_pass with its default buffering (proxy_buffering, proxy_request_buffering on)"
            record scenario=$s group="$kind" target="1 GiB $kind, $target" role="$role" unit=MiB/s \
                note="$nt" json="$(lib median "${speeds[@]}")"
        done
    done
    local rss hwm
    read -r rss hwm < <(lib rss "$pid")
    record scenario=$s group=rss target="passgate peak RSS (VmHWM)" role="" unit=MiB \
        value="$(awk -v k="$hwm" 'BEGIN{print k/1024}')" \
        note="before the transfers: VmHWM $(awk -v k="$base_hwm" 'BEGIN{printf "%.1f", k/1024}') MiB (includes one argon2 verification), VmRSS now $(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') MiB"
}

scenario_git-clone() {
    local s=git-clone
    local tool
    for tool in git nginx fcgiwrap; do
        have $tool || { note "$tool not installed: $s skipped (needs nginx + fcgiwrap + git http-backend)"; return; }
    done
    local backend_cgi
    backend_cgi="$(git --exec-path)/git-http-backend"
    [[ -x $backend_cgi ]] || { note "git-http-backend not found: $s skipped"; return; }
    local dir=$WORK/git i
    mkdir -p "$dir/src" "$dir/repos" "$dir/nginx/logs" "$dir/nginx/tmp"
    log "$s: building a test repository ($GIT_COMMITS commits x $GIT_MIB_PER_COMMIT MiB of random data)"
    git -C "$dir/src" init -q
    for i in $(seq "$GIT_COMMITS"); do
        head -c "$((GIT_MIB_PER_COMMIT * 1048576))" /dev/urandom >"$dir/src/blob$i.bin"
        printf 'commit %s\n' "$i" >>"$dir/src/README"
        git -C "$dir/src" add -A
        git -C "$dir/src" -c user.name=bench -c user.email=bench@example.invalid commit -q -m "commit $i"
    done
    git clone -q --bare "$dir/src" "$dir/repos/big.git"
    git -C "$dir/repos/big.git" repack -a -d -q
    local pack_bytes
    pack_bytes=$(du -sb "$dir/repos/big.git/objects/pack" | cut -f1)
    spawn fcgiwrap fcgiwrap -c 4 -s "unix:$dir/fcgiwrap.sock"
    local np
    np=$(port)
    local user_line=''
    (($(id -u) == 0)) && user_line="user $(id -un) $(id -gn);"
    cat >"$dir/nginx/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_max_body_size 0;
    client_body_temp_path $dir/nginx/tmp/body;
    proxy_temp_path $dir/nginx/tmp/proxy;
    fastcgi_temp_path $dir/nginx/tmp/fastcgi;
    uwsgi_temp_path $dir/nginx/tmp/uwsgi;
    scgi_temp_path $dir/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$np;
        client_max_body_size 0;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass unix:$dir/fcgiwrap.sock;
            fastcgi_buffering off;
            fastcgi_param SCRIPT_FILENAME $backend_cgi;
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param GIT_PROJECT_ROOT $dir/repos;
            fastcgi_param PATH_INFO \$uri;
        }
    }
}
EOF
    spawn nginx-git nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;'
    wait_port "$np" "$LAST_PID" || { cat "$WORK/nginx-git.log" >&2; note "nginx for git did not start: $s skipped"; return; }
    PG_CHECK_PATH='/big.git/info/refs?service=git-upload-pack' start_passgate git "http://127.0.0.1:$np" warn
    # Direct and passgate clones alternate, so that drift on a shared machine
    # (page cache, neighbours) falls on both sides alike.
    local target url r t0 t1 direct_t=() passgate_t=()
    log "$s: git clone ($(awk -v b="$pack_bytes" 'BEGIN{printf "%.0f", b/1048576}') MiB pack), direct and passgate alternating (${GIT_REPS}x each)"
    for r in $(seq "$GIT_REPS"); do
        for target in direct passgate; do
            if [[ $target == direct ]]; then
                url=http://127.0.0.1:$np/big.git
            else
                url=http://alice:${PG_PW[git]}@127.0.0.1:${PG_PORT[git]}/big.git
            fi
            rm -rf "$dir/clone"
            t0=$(date +%s.%N)
            if ! GIT_TERMINAL_PROMPT=0 git -c credential.helper= clone -q --no-checkout "$url" "$dir/clone" \
                2>"$dir/clone.err"; then
                note "$s: clone via $target failed: $(head -c 300 "$dir/clone.err" | sed "s/${PG_PW[git]}/[redacted]/g")"
                return
            fi
            t1=$(date +%s.%N)
            local one
            one="{\"rps\": $(awk -v b="$pack_bytes" -v a="$t0" -v z="$t1" 'BEGIN{print b/1048576/(z-a)}'), \"secs\": $(awk -v a="$t0" -v z="$t1" 'BEGIN{print z-a}')}"
            if [[ $target == direct ]]; then direct_t+=("$one"); else passgate_t+=("$one"); fi
        done
    done
    local med secs role
    for target in direct passgate; do
        if [[ $target == direct ]]; then
            med=$(lib median "${direct_t[@]}") role=direct
        else
            med=$(lib median "${passgate_t[@]}") role=''
        fi
        secs=$(python3 -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["secs"])' "$med")
        record scenario=$s target="git clone, $target" role="$role" unit=MiB/s \
            note="median ${secs} s of $GIT_REPS, alternating; nginx + fcgiwrap + git http-backend; --no-checkout" json="$med"
    done
    rm -rf "$dir/clone"
}

scenario_idle() {
    local s=idle
    pg idle
    local pid=${PG_PID[idle]} p=${PG_PORT[idle]}
    # start_passgate sent one request (argon2 verification) to check the instance.
    local rss hwm
    read -r rss hwm < <(lib rss "$pid")
    record scenario=$s group=idle target="passgate RSS after start + 1 request" role="" unit=MiB \
        value="$(awk -v k="$rss" 'BEGIN{print k/1024}')" note="VmHWM $(awk -v k="$hwm" 'BEGIN{printf "%.1f", k/1024}') MiB (one argon2 verification)"
    log "$s: opening $IDLE_CONNS keep-alive connections"
    local res
    res=$(lib idle "$p" "$IDLE_CONNS" "${PG_AUTH[idle]}" "$pid")
    local after per
    after=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("rss_kib", 0))' "$res")
    per=$(awk -v a="$after" -v b="$rss" -v n="$IDLE_CONNS" 'BEGIN{printf "%.1f", (a-b)/n}')
    record scenario=$s group=idle target="passgate RSS with $IDLE_CONNS idle keep-alive conns" role="" unit=MiB \
        value="$(awk -v k="$after" 'BEGIN{print k/1024}')" \
        note="$per KiB per connection; $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(", ".join(f"{k} {v}" for k, v in r.items() if k in ("ok","failures","unanswered","open_s")))' "$res")"
}

# ---------------------------------------------------------------------------

if ((BUILD)); then
    log "building passgate and bench_backend (release)"
    (cd "$ROOT" && cargo build --release -q && cargo build --release -q --example bench_backend)
fi
for bin in "$PASSGATE" "$BACKEND"; do
    [[ -x $bin ]] || { echo "missing $bin (run without --no-build)" >&2; exit 1; }
done
have python3 || { echo "python3 is required" >&2; exit 1; }
have curl || { echo "curl is required" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS
for s in "${ALL_SCENARIOS[@]}"; do
    for want in "${selected[@]}"; do
        if [[ $want == "$s" ]]; then
            "scenario_$s"
            break
        fi
    done
done

mkdir -p "$OUT_DIR"
{
    echo "# passgate benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), load average before the run: ${LOAD_BEFORE:-?}."
    echo "Mode: ${DUR}s x ${REPS} run(s) per measurement$( ((QUICK)) && echo ' (--quick)'); scenarios: ${selected[*]}; took $((SECONDS - started)) s."
    echo "Tools: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version 2>/dev/null | head -1), $(nginx -v 2>&1 | cut -d' ' -f3), caddy $(caddy version 2>/dev/null | cut -d' ' -f1)."
    echo
    lib table "$RESULTS"
    echo
    cat <<'EOF'
Columns: "value" is the median of the runs; p50/p99 come from wrk --latency
(h2load: from its per-request log). "× direct" is value / the scenario's
baseline row (the backend hit directly; for the flood rows, the valid client
when calm); "× nginx" is value / nginx auth_basic {SHA} in the same scenario
(HTTP/2: nginx h2c). Ratios only compare rows with the same unit.
passgate runs with its default argon2id parameters; nginx's {SHA} and $apr1$
and Caddy's bcrypt verify the password on every request, passgate verifies
once per cache_ttl (30 s). The flood runs disable passgate's rate limits (the
valid client shares 127.0.0.1 with the flood and would be limited with it),
except the "default rate limits" rows, which show the 429 answer.
EOF
    tg=$(lib targets "$RESULTS")
    if [[ -n $tg ]]; then
        echo
        echo "Targets (issue 6), from this run:"
        echo "$tg"
    fi
    if [[ -s $NOTES ]]; then
        echo
        echo "Notes:"
        cat "$NOTES"
    fi
} >"$OUT_DIR/latest.md.tmp"
mv "$OUT_DIR/latest.md.tmp" "$OUT_DIR/latest.md"
cat "$OUT_DIR/latest.md"
