#!/usr/bin/env bash
# The `sluice` server's figures for docs/benchmarks.md ("where the targets
# stand"): single-message POSTs back to back with the HTTP ceiling
# (`sluice-bench hello`) and the group-commit ceiling (`hello
# --fsync-dir`: an fdatasync before each answer, nothing else), then
# batched produce on the disk (with the device's write rate and a raw
# write + fdatasync loop right after) and on tmpfs. Release build,
# loopback, load generator on the same machine.
#
#   bench/server-figures.sh [ROUNDS]      (default 4; about 5 minutes)
#
# Needs Linux (/proc/diskstats, /dev/shm) and python3 for the raw-disk
# loop. Data directories are temporary and removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-4}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p sluice-server -p sluice-bench >&2
sluice="$target/release/sluice"
bench="$target/release/sluice-bench"
port=18181
hello_port=18199
disk_dir=$(mktemp -d)
shm_dir=$(mktemp -d -p /dev/shm)
device=$(lsblk -no pkname "$(df --output=source "$disk_dir" | tail -1)" 2>/dev/null || true)
device="${device:-$(basename "$(df --output=source "$disk_dir" | tail -1)")}"
server=""
hello=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$hello" ] && kill "$hello" 2>/dev/null || true
  rm -rf "$disk_dir" "$shm_dir"
}
trap cleanup EXIT

sectors_written() {
  awk -v d="$device" '$3 == d { print $10 }' /proc/diskstats
}

# run_sluice DIR LOAD-ARGS...: a fresh node in DIR, one 10 s load run.
run_sluice() {
  local dir="$1/data"
  shift
  rm -rf "$dir"
  "$sluice" serve --data-dir "$dir" --listen "127.0.0.1:$port" >"$dir.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do grep -q ready "$dir.log" 2>/dev/null && break; sleep 0.1; done
  local key
  key=$(cat "$dir/default-app.key")
  local out="$dir.load"
  "$bench" load --target "http://127.0.0.1:$port" --key "$key" "$@" \
    --duration-s 10 --warmup-s 2 >"$out" 2>&1 &
  local load=$!
  sleep 4
  local w1 w2
  w1=$(sectors_written)
  sleep 5
  w2=$(sectors_written)
  wait "$load"
  echo "  $(grep -E 'msg/s, ' "$out" | tail -1) |$(grep 'request latency' "$out") | device writes $(( (w2 - w1) * 512 / 5 / 1000000 )) MB/s"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
  rm -rf "$dir" "$dir.log" "$out"
}

# run_hello [--fsync-dir DIR]: the HTTP ceiling, or with the flag the
# group-commit ceiling (each POST answered after an fdatasync of its body).
run_hello() {
  "$bench" hello --listen "127.0.0.1:$hello_port" "$@" >/dev/null 2>&1 &
  hello=$!
  sleep 0.5
  local out
  out=$(mktemp)
  "$bench" load --target "http://127.0.0.1:$hello_port" --mode produce --api v1 \
    --batch 1 --connections 256 --duration-s 10 --warmup-s 2 >"$out" 2>&1
  echo "  $(grep -E 'msg/s, ' "$out" | tail -1) |$(grep 'request latency' "$out")"
  kill "$hello"
  wait "$hello" 2>/dev/null || true
  hello=""
  rm -f "$out"
}

raw_disk() {
  python3 - "$disk_dir/probe" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
buf = b"x" * (1 << 20)
start, n = time.time(), 0
while time.time() - start < 4:
    os.write(fd, buf)
    os.fdatasync(fd)
    n += 1
print("  raw disk: 1 MiB write + fdatasync %.0f MiB/s" % (n / (time.time() - start)))
os.close(fd)
os.unlink(sys.argv[1])
PY
}

date -u
git log --oneline -1
for r in $(seq "$rounds"); do
  echo "round $r"
  echo " HTTP ceiling (hello), single-message POSTs, 256 connections:"
  run_hello
  echo " group-commit ceiling (hello --fsync-dir on the disk), single-message POSTs, 256 connections:"
  run_hello --fsync-dir "$disk_dir/commit"
  rm -rf "$disk_dir/commit"
  echo " sluice, v1 single-message POSTs, 256 connections:"
  run_sluice "$disk_dir" --mode produce --api v1 --batch 1 --connections 256
done
echo " sluice, v2 binary single-message POSTs, 256 connections:"
run_sluice "$disk_dir" --mode produce --api v2-binary --batch 1 --connections 256
for r in $(seq 3); do
  echo "batched round $r (v2 binary, batches of 100, 16 connections)"
  echo " disk:"
  run_sluice "$disk_dir" --mode produce --api v2-binary --batch 100 --connections 16
  raw_disk
  echo " tmpfs:"
  run_sluice "$shm_dir" --mode produce --api v2-binary --batch 100 --connections 16
done
echo " disk, JSON batches of 100, 16 connections:"
run_sluice "$disk_dir" --mode produce --api v2-json --batch 100 --connections 16
date -u
