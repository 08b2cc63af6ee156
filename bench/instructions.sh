#!/usr/bin/env bash
# User-space instructions per single-message POST, counted by callgrind:
# a figure that does not drift with the VM the way req/s does (see
# docs/benchmarks.md, "Instructions per single POST"). The server runs
# under `valgrind --tool=callgrind` with instrumentation off until it is
# ready (`--instr-atstart=no`); the load generator sends v1
# single-message POSTs for a fixed time; the count covers only that
# load, divided by the POSTs `/metrics` saw meanwhile. Under valgrind
# the server runs ~30 times slower, so its
# Raft entries carry fewer messages than at full speed: compare builds
# with this script, not with the wall-clock figures.
#
#   bench/instructions.sh [SECONDS] [TOP] [KEEP]
#
# Defaults: 20 s, 25 functions; KEEP, a path, keeps the callgrind profile
# there (for `callgrind_annotate --tree=calling KEEP`, or kcachegrind).
#
# Needs valgrind (callgrind_control, callgrind_annotate) and curl. Prints
# instructions per POST, then the TOP functions by inclusive count among
# the workspace's crates and the usual leaves (copies, the allocator,
# SHA-256, HTTP parsing): the runtime's wrappers around them are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
top="${2:-25}"
keep="${3:-}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p sluice-server -p sluice-bench >&2
sluice="$target/release/sluice"
bench="$target/release/sluice-bench"
port=18183
dir=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  "$sluice" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/log" 2>&1 &
server=$!
for _ in $(seq 600); do grep -q ready "$dir/log" 2>/dev/null && break; sleep 0.2; done
grep -q ready "$dir/log" || { echo "sluice did not start under valgrind:" >&2; cat "$dir/log" >&2; exit 1; }
key=$(cat "$dir/data/default-app.key")

posts() {
  curl -sf "http://127.0.0.1:$port/metrics" |
    awk '/^sluice_http_requests_total\{route="\/v1\/\{app\}\/\{queue\}",method="POST",status="201"\}/ { n = $2 } END { print n + 0 }'
}

# The queue is created, and the first requests warm the server, before
# collection starts.
"$bench" load --target "http://127.0.0.1:$port" --key "$key" --mode produce --api v1 \
  --batch 1 --connections 256 --duration-s 3 --warmup-s 0 >/dev/null 2>&1
before=$(posts)
callgrind_control --instr=on "$server" >/dev/null 2>&1
"$bench" load --target "http://127.0.0.1:$port" --key "$key" --mode produce --api v1 \
  --batch 1 --connections 256 --duration-s "$seconds" --warmup-s 0 >"$dir/load" 2>&1
callgrind_control --instr=off "$server" >/dev/null 2>&1
after=$(posts)
kill -TERM "$server"
wait "$server" 2>/dev/null || true
server=""

requests=$((after - before))
[ "$requests" -gt 0 ] || { echo "no POST was answered" >&2; exit 1; }
out=$(ls "$dir"/callgrind.out*)
[ -n "$keep" ] && cp "$out" "$keep"
callgrind_annotate --inclusive=yes "$out" >"$dir/annotated" 2>/dev/null || true
total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$dir/annotated")
echo "$(git log --oneline -1)"
echo "POSTs answered while counting: $requests"
echo "instructions per POST: $((total / requests))"
echo "top functions (inclusive, instructions per POST):"
awk -v n="$requests" -v top="$top" '
  / file:function$/ { listing = 1; next }
  listing && /^ *[0-9,]+ / {
    count = $1; gsub(",", "", count)
    name = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", name); sub(/ \[.*$/, "", name)
    sub(/^[^:]*:/, "", name)
    if (name !~ /sluice_|memcpy|memmove|mi_malloc_aligned|mi_free|compress256|httparse::Request/) next
    if (seen[name]++) next
    printf "%9d  %s\n", count / n, substr(name, 1, 150)
    if (++shown >= top) exit
  }' "$dir/annotated"
