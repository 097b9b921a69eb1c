#!/usr/bin/env bash
# Fuzz smoke test for CI: builds the cargo-fuzz targets and runs each briefly.
#
#   scripts/fuzz-smoke.sh            # 20 s per target
#   FUZZ_SECONDS=300 scripts/fuzz-smoke.sh
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer): it uses the nightly toolchain
# when rustup has one, else the default toolchain with RUSTC_BOOTSTRAP=1 (a machine may
# have one toolchain only). Installs cargo-fuzz from crates.io only if it is missing. New corpus entries go to a temporary directory, so the
# committed seeds under fuzz/corpus/ stay as they are. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"

if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    TOOLCHAIN="+$FUZZ_TOOLCHAIN"
elif cargo +nightly --version >/dev/null 2>&1; then
    TOOLCHAIN="+nightly"
else
    TOOLCHAIN=""
    export RUSTC_BOOTSTRAP=1
    echo "fuzz-smoke: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo $TOOLCHAIN fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in ops config proxy_session proxy_auth; do
    mkdir -p "$work/$target"
    echo "fuzz-smoke: $target for ${SECONDS_PER_TARGET}s"
    cargo $TOOLCHAIN fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        >"$work/$target.log" 2>&1 || {
        tail -n 80 "$work/$target.log" >&2
        echo "fuzz-smoke: $target FAILED" >&2
        exit 1
    }
    grep -E '^Done|stat::number_of_executed_units' "$work/$target.log" || true
done
echo "fuzz-smoke: 4 passed, 0 failed"
