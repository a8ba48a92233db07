#!/usr/bin/env bash
# Wall-clock A/B of two passgate builds: cached-auth requests per second,
# both servers side by side behind one bench backend, rounds alternating
# A B B A ... so drift on a shared machine falls on both.
#
# usage: [AB_LOAD=h2] bench/ab.sh REV_A [REV_B] [rounds]
#   REV_A, REV_B: git revisions, or "." for the working tree (REV_B's default)
#   rounds: pairs of 5 s runs (default 6)
#   AB_LOAD: h1 (default: wrk -t2 -c64, HTTP/1.1 keep-alive) or h2
#            (h2load -t2 -c16 -m8, cleartext HTTP/2 with prior knowledge)
# e.g.:  bench/ab.sh HEAD~1          # the last commit against the working tree
#        AB_METRICS=1 bench/ab.sh . .  # one build, B with a [metrics] listener
#
# Why this exists: a change can cut callgrind's instructions per request
# (bench/instructions.sh) and still serve fewer requests per second; fat LTO
# did (-2.5% instructions, -15% req/s). Keep a change for speed only when
# this says so. Prints each round's ratio B/A and the median.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
REV_A=${1:?usage: bench/ab.sh REV_A [REV_B] [rounds]}
REV_B=${2:-.}
ROUNDS=${3:-6}
LOAD=${AB_LOAD:-h1}
case $LOAD in
h1) TOOL=wrk ;;
h2) TOOL=h2load ;;
*) echo "AB_LOAD must be h1 or h2" >&2; exit 2 ;;
esac
for tool in $TOOL curl python3 git; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/passgate-ab.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    git -C "$ROOT" worktree prune 2>/dev/null || true
}
trap cleanup EXIT

# The release binary of a revision: the working tree builds in place; a
# commit builds in a scratch worktree with its own target dir, kept in
# target/ab/ so that a second run of the same commit does not rebuild.
binary() {
    local rev=$1
    if [[ $rev == . ]]; then
        (cd "$ROOT" && cargo build --release -q) >&2
        echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/passgate"
        return
    fi
    local sha
    sha=$(git -C "$ROOT" rev-parse --verify "$rev^{commit}")
    local target=$ROOT/target/ab/$sha
    if [[ ! -x $target/release/passgate ]]; then
        local tree=$WORK/tree-$sha
        git -C "$ROOT" worktree add -q --detach "$tree" "$sha" >&2
        (cd "$tree" && CARGO_TARGET_DIR=$target cargo build --release -q) >&2
        git -C "$ROOT" worktree remove --force "$tree" >&2
    fi
    echo "$target/release/passgate"
}
BIN_A=$(binary "$REV_A")
BIN_B=$(binary "$REV_B")
(cd "$ROOT" && cargo build --release -q --example bench_backend)
BACKEND=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_backend

mapfile -t ports < <(python3 "$HERE/lib.py" ports 4)
setsid "$BACKEND" "${ports[0]}" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
declare -A AUTH
for side in a b; do
    port=${ports[1]}
    bin=$BIN_A
    metrics=""
    if [[ $side == b ]]; then port=${ports[2]} bin=$BIN_B; fi
    if [[ $side == b && ${AB_METRICS:-0} == 1 ]]; then
        metrics=$'[metrics]\nlisten = "127.0.0.1:'"${ports[3]}"'"'
    fi
    mkdir -p "$WORK/$side"
    cat >"$WORK/$side/proxy.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
[store]
path = "$WORK/$side/passgate.redb"
[admin]
socket = "$WORK/$side/admin.sock"
$metrics
$(python3 "$HERE/lib.py" bench-routes "http://127.0.0.1:${ports[0]}")
EOF
    pw=$("$bin" app-password create --config "$WORK/$side/proxy.toml" \
        --user alice --name ab --scope repository:read 2>/dev/null | head -1)
    AUTH[$side]="Authorization: Basic $(python3 "$HERE/lib.py" b64 "alice:$pw")"
    RUST_LOG=warn setsid "$bin" serve --config "$WORK/$side/proxy.toml" >"$WORK/$side/serve.log" 2>&1 &
    PIDS+=($!)
done
url() { [[ $1 == a ]] && echo "http://127.0.0.1:${ports[1]}/small" || echo "http://127.0.0.1:${ports[2]}/small"; }
# One run against side $1 for $2 seconds; prints the tool's output.
load() {
    if [[ $LOAD == h2 ]]; then
        h2load -t2 -c16 -m8 -D "$2" -H "${AUTH[$1]}" "$(url "$1")"
    else
        wrk -t2 -c64 -d"$2"s -H "${AUTH[$1]}" "$(url "$1")"
    fi
}
rps() {
    if [[ $LOAD == h2 ]]; then
        load "$1" 5 | awk '/^finished in/ {print $4}'
    else
        load "$1" 5 | awk '/Requests\/sec/ {print $2}'
    fi
}
for side in a b; do
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' -H "${AUTH[$side]}" "$(url $side)") == 200 ]] && break
        sleep 0.2
    done
    load "$side" 2 >/dev/null # warm up
done
echo "load: $LOAD"
echo "A = $REV_A ($BIN_A)"
echo "B = $REV_B ($BIN_B)"
ratios=()
for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then a=$(rps a); b=$(rps b); else b=$(rps b); a=$(rps a); fi
    ratio=$(python3 -c "print(f'{$b / $a:.3f}')")
    ratios+=("$ratio")
    printf 'round %d: A %9.0f  B %9.0f req/s  B/A %s\n' "$r" "$a" "$b" "$ratio"
done
python3 -c "import statistics, sys; r = sorted(map(float, sys.argv[1:])); print(f'median B/A {statistics.median(r):.3f} (min {r[0]:.3f}, max {r[-1]:.3f}, {len(r)} rounds)')" "${ratios[@]}"
