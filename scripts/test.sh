#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command; CI
# calls it too. Nothing needs installing beyond the Rust toolchain.
# Ends with one summary line over all crates ("summary: N passed, ...").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i == "passed;") p += $(i - 1)
         if ($i == "failed;") f += $(i - 1)
         if ($i == "ignored;") s += $(i - 1)
       }
     }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
