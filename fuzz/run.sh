#!/usr/bin/env bash
# Runs cargo-fuzz targets for a bounded time each; exits 1 if any target finds
# a crash, a failed invariant, a leak or a hang (the input is left in
# fuzz/artifacts/TARGET/). Used by .ci/run; see fuzz/README.md.
#
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET...]]    default: 20 s, every target
#
# FUZZ_SANITIZER=none falls back from AddressSanitizer (only if it fails to
# build or run). Each run starts from the committed seeds (fuzz/seeds/TARGET)
# and crash inputs (fuzz/regressions/TARGET) in a throw-away corpus directory.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
if [ "$#" -gt 0 ]; then shift; fi
sanitizer="${FUZZ_SANITIZER:-address}"
# cargo-fuzz needs nightly flags (-Z sanitizer, -Z build options); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Fuzz the dependency versions that ship: start from the main lockfile (cargo
# adds the fuzz-only crates to it). fuzz/Cargo.lock is not committed.
if [ ! -f Cargo.lock ]; then cp ../Cargo.lock Cargo.lock; fi
cargo fuzz build --sanitizer "$sanitizer"

failed=()
for target in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    dirs=("$corpus" "seeds/$target")
    if [ -d "regressions/$target" ]; then dirs+=("regressions/$target"); fi
    echo "fuzz: $target for ${secs}s"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$target")
    fi
    rm -rf "$corpus"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${secs}s each without a finding"
