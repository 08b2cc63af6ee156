# Shared by the peer scripts: where peers live, free ports, installs.
# Everything binds to 127.0.0.1; every server is stopped by its PID file.

PEERS_DIR="${SLUICE_PEERS_DIR:-$HOME/.cache/sluice/peers}"
mkdir -p "$PEERS_DIR"

say() { echo "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A TCP port free on 127.0.0.1 a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1 (at most $2 s).
wait_port() {
  local port=$1 limit=${2:-60} i
  for ((i = 0; i < limit * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port after $limit s"
}

# Installs Debian packages unless $1 (a command) is already there. Services
# the packages would start are held back: peers run only under these
# scripts, on loopback, with the settings a benchmark needs.
apt_install() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  say "installing $* (Debian packages)"
  local policy=/usr/sbin/policy-rc.d made=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made=1
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
  local status=$?
  [ -n "$made" ] && rm -f "$policy"
  return $status
}

# Stops every process whose PID file is in directory $1, then removes it.
stop_pids() {
  local dir=$1 f pid i
  [ -d "$dir" ] || return 0
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
  done
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -rf "$dir"
}
