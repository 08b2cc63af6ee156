#!/usr/bin/env bash
# CPU time per single-message POST, split by thread, for the server and
# the load generator, with the machine's idle share: where a POST's time
# goes (docs/benchmarks.md, "Fewer allocations per POST; where the rate
# goes"). A 12 s load of v1 single-message POSTs (256 connections, the
# load generator on the same machine); the counters (utime and stime in
# /proc/<pid>/task/*/stat, and /proc/stat) are read 5 s in and 5 s later.
#
#   bench/thread-cpu.sh [sluice|hello|hello-fsync] [DATA_PARENT]
#
# `sluice` (default) serves from a fresh data directory under DATA_PARENT
# (default: the system's temporary folder; /dev/shm puts it on tmpfs);
# `hello` is the HTTP ceiling, `hello-fsync` the group-commit ceiling,
# whose file goes under DATA_PARENT too. Needs Linux, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-sluice}"
parent="${2:-${TMPDIR:-/tmp}}"
case "$what" in
  sluice | hello | hello-fsync) ;;
  *)
    echo "usage: bench/thread-cpu.sh [sluice|hello|hello-fsync] [DATA_PARENT]" >&2
    exit 2
    ;;
esac
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p sluice-server -p sluice-bench >&2
sluice="$target/release/sluice"
bench="$target/release/sluice-bench"
port=18185
dir=$(mktemp -d -p "$parent")
server=""
load=""
cleanup() {
  [ -n "$load" ] && kill "$load" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

key_args=()
case "$what" in
  sluice)
    "$sluice" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q ready "$dir/log" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$dir/log" || { echo "sluice did not start:" >&2; cat "$dir/log" >&2; exit 1; }
    key_args=(--key "$(cat "$dir/data/default-app.key")")
    ;;
  hello | hello-fsync)
    fsync_args=()
    [ "$what" = hello-fsync ] && fsync_args=(--fsync-dir "$dir")
    "$bench" hello --listen "127.0.0.1:$port" "${fsync_args[@]}" >"$dir/log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q "hello on" "$dir/log" 2>/dev/null && break; sleep 0.1; done
    ;;
esac

"$bench" load --target "http://127.0.0.1:$port" "${key_args[@]}" --mode produce --api v1 \
  --batch 1 --connections 256 --duration-s 12 --warmup-s 2 >"$dir/load" 2>&1 &
load=$!

# One line per thread: its name (spaces made underscores), utime, stime
# (clock ticks). A thread's name is field 2 of its stat line, in
# parentheses; the times are fields 14 and 15.
threads() {
  python3 - "$1" <<'PY'
import glob, sys
for task in glob.glob(f"/proc/{sys.argv[1]}/task/*"):
    try:
        stat = open(task + "/stat").read()
    except OSError:
        continue  # the thread ended meanwhile
    name = stat[stat.index("(") + 1 : stat.rindex(")")].replace(" ", "_")
    rest = stat[stat.rindex(")") + 2 :].split()
    print(name, rest[11], rest[12])
PY
}
# The load generator's per-second lines ("  62035 msg/s ..."), and how
# many it has printed so far.
rate_line='^ +[0-9]+ msg/s '
rate_lines() {
  grep -cE "$rate_line" "$dir/load" || true
}

# snapshot N: every counter, into files ending in .N, and the time and
# the rate lines so far into DIR/when.N and DIR/lines.N.
snapshot() {
  threads "$server" >"$dir/server.$1"
  threads "$load" >"$dir/load.$1"
  head -1 /proc/stat >"$dir/stat.$1"
  date +%s.%N >"$dir/when.$1"
  rate_lines >"$dir/lines.$1"
}

sleep 5
snapshot 0
sleep 5
snapshot 1
wait "$load"
load=""
start=$(cat "$dir/when.0")
end=$(cat "$dir/when.1")
lines0=$(cat "$dir/lines.0")
lines1=$(cat "$dir/lines.1")

# Requests in the window: the mean of the per-second rates reported
# inside it, times its length.
requests=$(grep -E "$rate_line" "$dir/load" |
  awk -v a="$lines0" -v b="$lines1" -v s="$start" -v e="$end" \
    'NR > a && NR <= b { n += $1; k++ } END { print (k ? int(n / k * (e - s)) : 0) }')
python3 - "$dir" "$requests" "$(getconf CLK_TCK)" <<'PY'
import sys
from collections import defaultdict

folder, requests, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if requests <= 0:
    sys.exit("no requests counted in the window")

def times(path):
    total = defaultdict(lambda: [0, 0])
    for line in open(path):
        name, user, system = line.split()
        total[name][0] += int(user)
        total[name][1] += int(system)
    return total

def per_request(ticks):
    return ticks / hz / requests * 1e6

print(f"requests in the window: {requests}")
for label in ("server", "load"):
    before, after = times(f"{folder}/{label}.0"), times(f"{folder}/{label}.1")
    user_sum = system_sum = 0
    for name in sorted(after):
        user = after[name][0] - before.get(name, [0, 0])[0]
        system = after[name][1] - before.get(name, [0, 0])[1]
        user_sum += user
        system_sum += system
        if user or system:
            print(f"  {label:6} {name:18} user {per_request(user):6.2f} µs  kernel {per_request(system):6.2f} µs")
    print(f"  {label:6} {'all threads':18} user {per_request(user_sum):6.2f} µs  kernel {per_request(system_sum):6.2f} µs")
a = [int(v) for v in open(f"{folder}/stat.0").read().split()[1:]]
b = [int(v) for v in open(f"{folder}/stat.1").read().split()[1:]]
d = [y - x for x, y in zip(a, b)]
all_ticks = sum(d)
print(f"  machine: idle {d[3] / all_ticks:.1%}, iowait {d[4] / all_ticks:.1%}, softirq {d[6] / all_ticks:.1%}")
PY
tail -2 "$dir/load"
