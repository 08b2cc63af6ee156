#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command; CI
# calls it too. Nothing needs installing beyond the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
cargo test --workspace --locked "$@"
