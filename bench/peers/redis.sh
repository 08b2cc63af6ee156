#!/usr/bin/env bash
# Redis Streams on loopback, at Sluice's durability: the append-only file
# with `appendfsync always` (fsync before every reply), automatic AOF
# rewrites off, no RDB snapshots. Debian's redis-server. Single node only:
# Redis replicates asynchronously, so a replicated Redis acknowledges
# before its replicas have the write (not the durability compared here).
#
#   bench/peers/redis.sh start     prints the client URL
#   bench/peers/redis.sh stop
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOME_DIR="$PEERS_DIR/redis"

start() {
  [ "${1:-}" != "--nodes" ] || [ "${2:-1}" = 1 ] || die "Redis runs as one node here (its replication is asynchronous)"
  apt_install redis-server redis-server
  stop_pids "$HOME_DIR"
  mkdir -p "$HOME_DIR/data"
  local port; port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --dir "$HOME_DIR/data" --appendonly yes --appendfsync always \
    --auto-aof-rewrite-percentage 0 --save '' --daemonize no \
    > "$HOME_DIR/redis.log" 2>&1 &
  echo $! > "$HOME_DIR/redis.pid"
  wait_port "$port" 30
  say "redis-server $(redis-server --version | awk '{print $3}'): appendonly yes, appendfsync always, auto-aof-rewrite off; log in $HOME_DIR"
  echo "redis://127.0.0.1:$port"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop_pids "$HOME_DIR" ;;
  install) apt_install redis-server redis-server ;;
  *) die "usage: $0 start | stop | install" ;;
esac
