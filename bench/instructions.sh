#!/usr/bin/env bash
# Instructions per proxied request: passgate (release, one worker) under
# valgrind's callgrind behind the bench backend, cached app-password auth,
# wrk -c4. Instruction counts do not depend on what else the machine is
# doing, so they compare builds where req/s on a shared machine cannot.
#
# usage: bench/instructions.sh [seconds]      (default 5; needs valgrind, wrk)
#        METRICS=1 bench/instructions.sh      (with a [metrics] listener: the
#                                              cost of recording, scraped once at the end)
# Leaves callgrind.out in the temp dir it prints, for callgrind_annotate.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${1:-5}
for tool in valgrind callgrind_control callgrind_annotate wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -q && cargo build --release -q --example bench_backend)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/passgate-instr.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
mapfile -t ports < <(python3 "$HERE/lib.py" ports 3)
BP=${ports[0]} PP=${ports[1]} MP=${ports[2]}
METRICS_TOML=""
if [[ ${METRICS:-0} == 1 ]]; then METRICS_TOML=$'[metrics]\nlisten = "127.0.0.1:'"$MP"'"'; fi
setsid "$TARGET_DIR/release/examples/bench_backend" "$BP" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/data"
cat >"$WORK/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$PP"]
workers = 1
[store]
path = "$WORK/data/passgate.redb"
[admin]
socket = "$WORK/data/admin.sock"
$METRICS_TOML
$(python3 "$HERE/lib.py" bench-routes "http://127.0.0.1:$BP")
EOF
PW=$("$TARGET_DIR/release/passgate" app-password create --config "$WORK/proxy.toml" \
    --user alice --name bench --scope repository:read | head -1)
AUTH="Authorization: Basic $(python3 "$HERE/lib.py" b64 "alice:$PW")"
# The malloc setting serve would re-exec itself with, set up front: valgrind
# does not follow the exec.
MALLOC_MMAP_THRESHOLD_=1048576 RUST_LOG=warn setsid valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/callgrind.out" \
    "$TARGET_DIR/release/passgate" serve --config "$WORK/proxy.toml" >"$WORK/passgate.log" 2>&1 &
VG=$!
PIDS+=("$VG")
for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "http://127.0.0.1:$PP/small") == 200 ]] && break
    sleep 0.3
done
wrk -t1 -c4 -d2s -H "$AUTH" "http://127.0.0.1:$PP/small" >/dev/null # warm up
callgrind_control -z "$VG" >/dev/null 2>&1
n=$(wrk -t1 -c4 -d"${SECS}s" -H "$AUTH" "http://127.0.0.1:$PP/small" | awk '/requests in/ {print $1}')
callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
outs=("$WORK"/callgrind.out*) # glob expansion is sorted
out=${outs[-1]}
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$n requests, $((total / n)) instructions per proxied request ($out)"
if [[ ${METRICS:-0} == 1 ]]; then
    curl -s "http://127.0.0.1:$MP/metrics" | grep -E '^passgate_http_requests_total' || true
fi
