#!/usr/bin/env bash
# Shows each test suite catching a deliberately injected bug. Each patch under
# docs/mutations/ is applied to a scratch worktree (never to your checkout) and the suites
# named for it are run; a suite "catches" the bug when it fails.
#
#   bash scripts/mutations.sh                 # every patch, every suite named for it
#   bash scripts/mutations.sh lost-wakeup     # one patch
#
# Results are printed as a table; docs/verification.md records the last run.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
scratch="${MUTATION_WORKTREE:-/tmp/pool-mutation}"
export CARGO_TARGET_DIR="${MUTATION_TARGET_DIR:-/tmp/pool-mutation-target}"

# patch name -> the suites expected to catch it ("name: command").
suites_for() {
    case "$1" in
    unfair-newest-first) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" ;;
    lost-wakeup) printf '%s\n' \
        "loom: cargo test --features loom --test loom_shell" \
        "shuttle: cargo test --features shuttle --test shuttle_shell" ;;
    leak-on-dropped-grant) printf '%s\n' \
        "shell unit: cargo test -p pool-core --lib shell" \
        "loom: cargo test --features loom --test loom_shell" \
        "shuttle: cargo test --features shuttle --test shuttle_shell" ;;
    no-retry-after-failed-connect) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" \
        "pool-sim swarm: cargo run --release -p pool-sim -- swarm --seeds 500" ;;
    lend-dead-at-checkout) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" ;;
    open-past-max-size) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" ;;
    lend-after-evict) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" ;;
    keep-idle-past-shrink) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" ;;
    backoff-survives-success | idle-timeout-below-min-idle | min-idle-counts-leased | \
    lend-expired-on-return | fatal-error-times-out | timeout-loses-its-cause | \
    leak-never-reported | check-wrong-connections) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" \
        "pool-sim swarm: cargo run --release -p pool-sim -- swarm --seeds 2000" ;;
    stale-timer-after-fire) printf '%s\n' \
        "unit: cargo test -p pool-core --lib" \
        "proptest model: cargo test -p pool-core --test model" \
        "loom: cargo test --features loom --test loom_shell" \
        "shuttle: cargo test --features shuttle --test shuttle_shell" ;;
    no-arm-without-work) printf '%s\n' \
        "shell unit: cargo test -p pool-core --lib shell" \
        "loom: cargo test --features loom --test loom_shell" \
        "shuttle: cargo test --features shuttle --test shuttle_shell" ;;
    reset-misses-queued-request) printf '%s\n' \
        "real PostgreSQL: cargo test --test pg_reset" ;;
    status-read-below-tls) printf '%s\n' \
        "real PostgreSQL: cargo test --test pg_reset_tls" ;;
    *) echo "unknown patch $1" >&2; return 1 ;;
    esac
}

patches=("$@")
if [ "${#patches[@]}" -eq 0 ]; then
    for p in docs/mutations/*.patch; do patches+=("$(basename "$p" .patch)"); done
fi

git worktree remove --force "$scratch" >/dev/null 2>&1 || rm -rf "$scratch"
git worktree add --detach "$scratch" HEAD >/dev/null
trap 'git -C "$root" worktree remove --force "$scratch" >/dev/null 2>&1' EXIT

printf '| injected bug | suite | result |\n|---|---|---|\n' >"$scratch.results"
for patch in "${patches[@]}"; do
    git -C "$scratch" checkout -q -- .
    git -C "$scratch" apply "$root/docs/mutations/$patch.patch" || { echo "cannot apply $patch" >&2; exit 1; }
    while IFS= read -r line; do
        name="${line%%:*}"
        cmd="${line#*: }"
        echo "== $patch / $name: $cmd" >&2
        if (cd "$scratch" && timeout 900 $cmd >"$scratch.log" 2>&1); then
            result="MISSED (suite passed)"
        else
            result="caught: $(grep -m1 -E 'panicked at|assertion|Violation|deadlock|FAILED' "$scratch.log" | sed -E 's/^FAILED seed ([0-9]+): .*\]: /seed \1: /' | cut -c1-110 | tr '|' '/')"
        fi
        printf '| %s | %s | %s |\n' "$patch" "$name" "$result" >>"$scratch.results"
    done < <(suites_for "$patch")
done
cat "$scratch.results"
