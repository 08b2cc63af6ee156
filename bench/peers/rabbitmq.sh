#!/usr/bin/env bash
# RabbitMQ on loopback with quorum queues (the driver declares them,
# persistent messages, publisher confirms: a confirm means the quorum has
# the message on disk). Debian's rabbitmq-server, one node or a 3-node
# cluster, each node with its own folder, Erlang cookie and ports; epmd
# bound to 127.0.0.1.
#
#   bench/peers/rabbitmq.sh start [--nodes 1|3]   prints the client URL
#   bench/peers/rabbitmq.sh stop
set -euo pipefail
. "$(dirname "$0")/lib.sh"
HOME_DIR="$PEERS_DIR/rabbitmq"
BIN=/usr/lib/rabbitmq/bin

node_env() { # node index, AMQP port
  local i=$1 port=$2
  export HOME="$HOME_DIR" # the Erlang cookie lives here
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_NODENAME="bench$i@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  export RABBITMQ_DIST_PORT=$((port + 20000))
  export RABBITMQ_MNESIA_BASE="$HOME_DIR/node$i/mnesia"
  export RABBITMQ_LOG_BASE="$HOME_DIR/node$i/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$HOME_DIR/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$HOME_DIR/node$i/rabbitmq"
}

ctl() { "$BIN/rabbitmqctl" -n "bench$1@localhost" "${@:2}" >&2; }

start() {
  local nodes=1
  [ "${1:-}" = "--nodes" ] && nodes=${2:-1}
  [ "$nodes" = 1 ] || [ "$nodes" = 3 ] || die "--nodes must be 1 or 3"
  apt_install "$BIN/rabbitmq-server" rabbitmq-server
  stop
  mkdir -p "$HOME_DIR"
  echo "[]." > "$HOME_DIR/enabled_plugins"
  local i ports=()
  for ((i = 1; i <= nodes; i++)); do
    # The distribution port is the AMQP port + 20000: keep both free.
    local p
    while :; do p=$(free_port); [ "$p" -lt 45000 ] && break; done
    ports+=("$p")
    mkdir -p "$HOME_DIR/node$i"
    (node_env "$i" "$p"; exec "$BIN/rabbitmq-server") > "$HOME_DIR/node$i.log" 2>&1 &
    echo $! > "$HOME_DIR/node$i.pid"
  done
  # The AMQP port opens once a node has booted.
  for ((i = 1; i <= nodes; i++)); do
    wait_port "${ports[$((i - 1))]}" 180
  done
  for ((i = 2; i <= nodes; i++)); do
    (node_env "$i" "${ports[$((i - 1))]}"
     ctl "$i" stop_app && ctl "$i" join_cluster bench1@localhost && ctl "$i" start_app)
  done
  say "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null): $nodes node(s), quorum queues; logs in $HOME_DIR"
  echo "amqp://guest:guest@127.0.0.1:${ports[0]}/%2f"
}

stop() {
  local f i
  for f in "$HOME_DIR"/node*.pid; do
    [ -e "$f" ] || continue
    i=$(basename "$f" .pid); i=${i#node}
    (export HOME="$HOME_DIR"; ctl "$i" stop >/dev/null 2>&1 || true)
  done
  stop_pids "$HOME_DIR"
  epmd -kill >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  install) apt_install "$BIN/rabbitmq-server" rabbitmq-server ;;
  *) die "usage: $0 start [--nodes 1|3] | stop | install" ;;
esac
