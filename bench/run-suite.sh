#!/usr/bin/env bash
# The benchmark suite: every workload in bench/workloads/ against Sluice
# (1 and 3 nodes), and the comparison shape (compare-*.yaml) against
# Sluice and each peer at equal durability (fsync before every
# acknowledgement): at max rate, then both at half the lower of the two
# max rates. Peers are installed and started by bench/peers/ and stopped
# afterwards. Writes every result (JSON + SVG) under the output folder and
# the tables into docs/benchmarks.md (between the suite markers).
#
#   bench/run-suite.sh [--quick] [--peers "nats redis rabbitmq"] [--out DIR] [--no-docs] [--peers-only]
#
# --peers-only: skip the Sluice workload set (to redo peers into an
# existing --out folder; Sluice's comparison runs are reused when there).
# --quick: 5 s measured / 2 s warm-up per run instead of 20 / 5 (a smoke
# test of the whole pipeline). The full suite takes about 25 minutes on a
# 2-core machine, plus the first release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
DURATION=20 WARMUP=5 PEERS="nats redis rabbitmq" DOCS=1 WORKLOADS=1
OUT="bench-results/suite-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DURATION=5 WARMUP=2 ;;
    --peers) PEERS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-docs) DOCS="" ;;
    --peers-only) WORKLOADS="" ;;
    *) echo "usage: $0 [--quick] [--peers LIST] [--out DIR] [--no-docs] [--peers-only]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
rm -f "$OUT/failures.txt"
LOG="$OUT/suite.log"
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$LOG" >&2; }

say "building sluice and sluice-bench (release)"
cargo build --release --locked -p sluice-server -p sluice-bench 2>&1 | tail -1 >&2
BENCH="$CARGO_TARGET_DIR/release/sluice-bench"
SLUICE="$CARGO_TARGET_DIR/release/sluice"
COMPARE=bench/workloads/compare-max-rate-1-queue-16-partitions-1kb.yaml

running_peer=""
cleanup() { [ -z "$running_peer" ] || "bench/peers/$running_peer.sh" stop || true; }
trap cleanup EXIT

# run LABEL WORKLOAD ARGS...: one run; a failure is noted, not fatal.
run() {
  local label=$1 workload=$2; shift 2
  say "run $label"
  if ! "$BENCH" run "$workload" --out "$OUT" --label "$label" \
      --duration-s "$DURATION" --warmup-s "$WARMUP" "$@" >> "$LOG" 2>&1; then
    say "FAILED: $label (see $LOG)"
    echo "$label" >> "$OUT/failures.txt"
  fi
}

for nodes in 1 3; do
  if [ -n "$WORKLOADS" ]; then
    for w in bench/workloads/*.yaml; do
      case "$w" in *compare-*) continue ;; esac
      run "sluice-$nodes-$(basename "$w" .yaml)" "$w" --spawn "$nodes" --sluice-bin "$SLUICE"
    done
  fi
  if [ -n "$WORKLOADS" ] || [ ! -f "$OUT/sluice-$nodes-max.json" ]; then
    run "sluice-$nodes-max" "$COMPARE" --spawn "$nodes" --sluice-bin "$SLUICE"
  fi
done

for peer in $PEERS; do
  for nodes in 1 3; do
    [ "$peer" = redis ] && [ "$nodes" = 3 ] && continue # asynchronous replication only
    say "starting $peer ($nodes node(s))"
    if ! url=$("bench/peers/$peer.sh" start --nodes "$nodes" 2>>"$LOG"); then
      say "$peer could not be started; skipped (see $LOG)"
      continue
    fi
    running_peer=$peer
    settings="bench/peers/$peer.sh --nodes $nodes"
    run "$peer-$nodes-max" "$COMPARE" --driver "$peer" --target "$url" --replicas "$nodes" --server-settings "$settings"
    if [ -f "$OUT/$peer-$nodes-max.json" ] && [ -f "$OUT/sluice-$nodes-max.json" ]; then
      half=$("$BENCH" half-rate "$OUT/sluice-$nodes-max.json" "$OUT/$peer-$nodes-max.json")
      run "$peer-$nodes-half" "$COMPARE" --driver "$peer" --target "$url" --replicas "$nodes" --rate "$half" --server-settings "$settings"
    fi
    "bench/peers/$peer.sh" stop
    running_peer=""
    if [ -n "${half:-}" ]; then
      run "sluice-$nodes-half-$peer" "$COMPARE" --spawn "$nodes" --sluice-bin "$SLUICE" --rate "$half"
    fi
    half=""
  done
done

"$BENCH" suite-table "$OUT" > "$OUT/tables.md"
say "tables: $OUT/tables.md"
if [ -n "$DOCS" ]; then
  {
    echo "Measured by \`bench/run-suite.sh\` on $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD): $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r); sluice-bench on the same machine as the servers; ${DURATION} s measured after ${WARMUP} s of warm-up per run. Results: \`$OUT\`."
    echo
    cat "$OUT/tables.md"
  } > "$OUT/docs-section.md"
  python3 - "$OUT/docs-section.md" docs/benchmarks.md <<'PY'
import sys
section, doc = sys.argv[1], sys.argv[2]
text = open(doc).read()
begin, end = "<!-- suite:begin -->", "<!-- suite:end -->"
body = open(section).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + begin + "\n" + body + end + tail
else:
    text += "\n## Suite: Sluice and its peers (`bench/run-suite.sh`)\n\n" + begin + "\n" + body + end + "\n"
open(doc, "w").write(text)
PY
  say "docs/benchmarks.md updated"
fi
[ ! -s "$OUT/failures.txt" ] || { say "some runs failed: $(tr '\n' ' ' < "$OUT/failures.txt")"; exit 1; }
say "done"
