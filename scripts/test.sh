#!/usr/bin/env bash
# Every test the project has, from a fresh clone: `bash scripts/test.sh`.
#
# Installs what is missing (PostgreSQL, PgBouncer, cargo-fuzz), then runs, in order:
# formatting and lints, the workspace tests (unit, proptest model, simulator, tokio
# adapter, real PostgreSQL integration), the loom and shuttle model-checking suites, a
# short fuzzing run, and a simulator swarm. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

# Runs a cargo test command, shows its output, and fails if it ran no test at all: a
# suite that silently compiles to nothing (a wrong feature, a cfg typo) is a failure.
counted() {
    local log
    log="$(mktemp)"
    "$@" 2>&1 | tee "$log"
    local passed
    passed="$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')"
    rm -f "$log"
    if [ "$passed" -eq 0 ]; then
        echo "scripts/test.sh: '$*' ran no test" >&2
        exit 1
    fi
}

step "dependencies"
bash scripts/install-deps.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Every feature at once: the loom and shuttle suites (and pool-tokio's serde). The
# model-checked builds of pool-core are their own packages (verify/), so this is safe.
cargo clippy --workspace --all-targets --all-features -- -D warnings
# pool-tokio without its default `postgres` feature (the pool alone: no tokio-postgres, no
# TLS) must keep building and passing its own tests.
cargo clippy -p pool-tokio --all-targets --no-default-features -- -D warnings
# The injected-bug patches (scripts/mutations.sh) must keep applying to the code they
# break; a stale one would silently stop showing anything.
for patch in docs/mutations/*.patch; do
    git apply --check "$patch" || { echo "stale mutation patch: $patch" >&2; exit 1; }
done

step "workspace tests (unit, model, simulator, tokio adapter, real PostgreSQL)"
counted cargo test --workspace
counted cargo test -p pool-tokio --no-default-features

step "loom: exhaustive interleavings of the shell"
counted cargo test --features loom

step "shuttle: randomized and PCT schedules of the shell"
counted cargo test --features shuttle

step "cargo-fuzz smoke run"
bash scripts/fuzz-smoke.sh

step "simulator swarm"
cargo run --release -p pool-sim -- swarm --seeds "${SWARM_SEEDS:-2000}"

echo
echo "scripts/test.sh: all suites passed"
