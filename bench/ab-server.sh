#!/usr/bin/env bash
# A/B of two `sluice` binaries on one load, alternating them round by
# round (a virtual disk drifts between minutes, so only pairs compare),
# each run on a fresh data directory: docs/benchmarks.md quotes its pairs.
#
#   bench/ab-server.sh BEFORE AFTER [ROUNDS] [batched|single] [disk|wal-only]
#
# BEFORE and AFTER are paths to release builds of `sluice` (copy one aside
# before rebuilding). `batched`: binary produce, 16 connections, batches of
# 100 (default); `single`: v1 single-message POSTs, 256 connections.
# `wal-only` puts the groups' partition logs on tmpfs, so that only the
# node WAL writes to the disk. Each run measures 8 s after 2 s of warm-up
# and prints throughput, latency, the device's write rate over the run,
# the server's CPU time per message, the WAL's spare files and the
# server's peak resident memory at its end,
# and the CPU time the hypervisor stole over the run (% of one CPU; on a
# shared VM, the runs that lose the most are the ones it steals from).
# Needs Linux (/proc/diskstats, /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."
before="$1"
after="$2"
rounds="${3:-3}"
load="${4:-batched}"
place="${5:-disk}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p sluice-bench >&2
bench="$target/release/sluice-bench"
port=18181
disk_dir=$(mktemp -d -p "${AB_DIR:-$PWD}")
shm_dir=$(mktemp -d -p /dev/shm)
device=$(lsblk -no pkname "$(df --output=source "$disk_dir" | tail -1)" 2>/dev/null || true)
device="${device:-$(basename "$(df --output=source "$disk_dir" | tail -1)")}"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$disk_dir" "$shm_dir"
}
trap cleanup EXIT

# cpu_ticks PID: the process's user + system CPU time, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# steal_ticks: CPU time the hypervisor gave to others, over all CPUs.
steal_ticks() {
  awk '$1 == "cpu" { print $9 }' /proc/stat
}

sectors_written() {
  awk -v d="$device" '$3 == d { print $10 }' /proc/diskstats
}

case "$load" in
  batched) args=(--mode produce --api v2-binary --connections 16 --batch 100) ;;
  single) args=(--mode produce --api v1 --batch 1 --connections 256) ;;
  *) echo "unknown load '$load' (batched or single)" >&2; exit 2 ;;
esac

for round in $(seq "$rounds"); do
  for side in before after; do
    bin="$before"
    [ "$side" = after ] && bin="$after"
    dir="$disk_dir/data"
    rm -rf "$dir" "$shm_dir/groups"
    mkdir -p "$dir"
    if [ "$place" = wal-only ]; then
      mkdir -p "$shm_dir/groups"
      ln -s "$shm_dir/groups" "$dir/groups"
    fi
    "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" >"$disk_dir/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q ready "$disk_dir/server.log" 2>/dev/null && break; sleep 0.1; done
    key=$(cat "$dir/default-app.key")
    w1=$(sectors_written)
    c1=$(cpu_ticks "$server")
    s1=$(steal_ticks)
    out=$("$bench" load --target "http://127.0.0.1:$port" --key "$key" "${args[@]}" \
      --duration-s 8 --warmup-s 2 2>&1)
    w2=$(sectors_written)
    c2=$(cpu_ticks "$server")
    s2=$(steal_ticks)
    msgs=$(grep -E 'msg/s, ' <<<"$out" | tail -1 | awk '{ print $1 }')
    # The server's CPU per message over the whole run (warm-up included),
    # a steadier figure than throughput when the load shares the cores.
    cpu_us=$(awk -v t=$((c2 - c1)) -v hz="$(getconf CLK_TCK)" -v m="$msgs" \
      'BEGIN { printf "%.1f", t * 1000000 / hz / (m * 10 + 1) }')
    spares=$(find "$dir/wal" -name '*.spare' | wc -l)
    peak_rss_mb=$(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$server/status")
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
    echo "round $round $side: $(grep -E 'msg/s, ' <<<"$out" | tail -1) |$(grep 'request latency' <<<"$out") | device $(( (w2 - w1) * 512 / 10 / 1000000 )) MB/s | server CPU ${cpu_us} µs/msg | spares $spares | peak RSS ${peak_rss_mb} MB | steal $(( (s2 - s1) * 100 / $(getconf CLK_TCK) / 10 )) %"
  done
done
