#!/usr/bin/env bash
# User-space instructions per request under callgrind, same load for each
# server: passgate (release, one worker, one app-password route), nginx
# auth_basic {SHA} + proxy_pass (keepalive upstream) and nginx plain
# proxy_pass, all in front of the same backend (nginx `return 200` with a
# 30-byte JSON body). Each server runs alone under callgrind (nginx with
# master_process off, one worker); wrk -t1 -c4 warms up, the counters are
# zeroed (callgrind_control -z), a counted run follows and is dumped
# (callgrind_control -d). Prints each count and passgate's two ratios.
# Counts do not depend on machine load, so a shared machine measures fine.
#
# usage: bench/compare.sh [seconds] [warm-up seconds]   (default 5 and 2)
# needs valgrind, wrk, nginx, curl, python3. Keeps the callgrind outputs in
# the temp dir it prints, for callgrind_annotate.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${1:-5}
WARM=${2:-2}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
for tool in valgrind callgrind_control callgrind_annotate wrk curl python3 "$NGINX"; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -q)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/passgate-compare.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
mapfile -t ports < <(python3 "$HERE/lib.py" ports 4)
BP=${ports[0]} PP=${ports[1]} SP=${ports[2]} NP=${ports[3]}

# nginx_conf NAME SERVER-BODY: a one-worker nginx in its own prefix.
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
    upstream backend { server 127.0.0.1:$BP; keepalive 16; }
    server {
$2
    }
}
EOF
}
# start NAME [valgrind args...]: start nginx NAME in its own process group.
start_nginx() {
    local name=$1
    shift
    setsid "$@" "$NGINX" -p "$WORK/$name" -c "$WORK/$name/nginx.conf" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST=$!
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
PROXY_BODY="        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }"

nginx_conf backend "        listen 127.0.0.1:$BP;
        location / { default_type application/json; return 200 '{\"ok\":true,\"bench\":\"compare\"}'; }"
start_nginx backend
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
nginx_conf sha "        listen 127.0.0.1:$SP;
        auth_basic bench;
        auth_basic_user_file $WORK/htpasswd;
$PROXY_BODY"
nginx_conf plain "        listen 127.0.0.1:$NP;
$PROXY_BODY"

# measure NAME URL: instructions per request of the callgrind process $LAST.
measure() {
    local name=$1 url=$2 vg=$LAST n total outs
    wait_200 "$url" -H "$AUTH"
    wrk -t1 -c4 -d"${WARM}s" -H "$AUTH" "$url" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    n=$(wrk -t1 -c4 -d"${SECS}s" -H "$AUTH" "$url" | awk '/requests in/ {print $1}')
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    outs=("$WORK/$name.callgrind".*) # sorted: the last is the dump after the counted run
    total=$(callgrind_annotate "${outs[-1]}" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    kill -- "-$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    echo "$((total / n))"
    echo "$name: $n requests, $total instructions (${outs[-1]})" >&2
}
VG=(valgrind --tool=callgrind --dump-instr=no)

# The malloc setting serve would re-exec itself with, set up front: valgrind
# does not follow the exec.
MALLOC_MMAP_THRESHOLD_=131072 RUST_LOG=warn setsid "${VG[@]}" \
    --callgrind-out-file="$WORK/passgate.callgrind.%p" \
    "$TARGET_DIR/release/passgate" serve --config "$WORK/proxy.toml" >"$WORK/passgate.log" 2>&1 &
PIDS+=($!)
LAST=$!
pg=$(measure passgate "http://127.0.0.1:$PP/small")
start_nginx sha "${VG[@]}" --callgrind-out-file="$WORK/sha.callgrind.%p"
sha=$(measure sha "http://127.0.0.1:$SP/small")
start_nginx plain "${VG[@]}" --callgrind-out-file="$WORK/plain.callgrind.%p"
plain=$(measure plain "http://127.0.0.1:$NP/small")

python3 - "$pg" "$sha" "$plain" <<'EOF'
import sys
pg, sha, plain = (int(a) for a in sys.argv[1:])
print("user-space instructions per request (callgrind, wrk -t1 -c4, cached auth)")
print(f"  passgate (app-password)            {pg:>8,}")
print(f"  nginx auth_basic {{SHA}} + proxy_pass {sha:>8,}   passgate / this = {pg / sha:.2f}x")
print(f"  nginx plain proxy_pass             {plain:>8,}   passgate / this = {pg / plain:.2f}x")
EOF
echo "callgrind outputs: $WORK"
