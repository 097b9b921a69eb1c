#!/usr/bin/env bash
# The long, deep version of the model-checking and fuzzing suites (hours, not minutes):
#   bash scripts/deep-check.sh
# Each knob can be overridden from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
export SHUTTLE_ITERATIONS="${SHUTTLE_ITERATIONS:-100000}"
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
# CI runs fixed seeds (deterministic); a deep run explores new ones, printed to replay.
export SHUTTLE_SEED="${SHUTTLE_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
FUZZ_SECONDS="${FUZZ_SECONDS:-3600}"
SWARM_SEEDS="${SWARM_SEEDS:-1000000}"

echo "== loom, preemption bound $LOOM_MAX_PREEMPTIONS"
cargo test --release --features loom --test loom_shell
echo "== shuttle, $SHUTTLE_ITERATIONS random + PCT schedules per test, SHUTTLE_SEED=$SHUTTLE_SEED"
cargo test --release --features shuttle --test shuttle_shell
echo "== proptest model, $PROPTEST_CASES cases, PROPTEST_RNG_SEED=$PROPTEST_RNG_SEED"
cargo test --release -p pool-core --test model
echo "== pool-sim swarm, $SWARM_SEEDS seeds"
cargo run --release -p pool-sim -- swarm --seeds "$SWARM_SEEDS"
echo "== cargo-fuzz, ${FUZZ_SECONDS}s per target"
FUZZ_SECONDS="$FUZZ_SECONDS" bash scripts/fuzz-smoke.sh
