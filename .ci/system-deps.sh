#!/usr/bin/env bash
# Install and start what the portal needs from the operating system, only when it is missing.
#   .ci/system-deps.sh run    Redis (when none answers), gettext, python3-venv, the Docker engine
#                             (started when none answers), configurable-http-proxy (npm)
#   .ci/system-deps.sh test   the same, plus PostgreSQL (when none answers) and Chromium
# Debian 12, as root (or with sudo). Idempotent: a second run installs nothing.
set -euo pipefail
mode=${1:-run}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
missing=()
apt_updated=0

say() { printf '\033[1;32m==>\033[0m %s\n' "$*"; }
need() { missing+=("$@"); }
apt_busy() { pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; }
apt_install() {
  [ ${#missing[@]} -gt 0 ] || return 0
  # Another apt-get (e.g. a background install of docker.io) may hold the lock: wait for it,
  # then install only what it did not already bring.
  if apt_busy; then
    say "Waiting for another apt-get/dpkg to finish"
    for _ in $(seq 600); do apt_busy || break; sleep 1; done
  fi
  local still=()
  for pkg in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || still+=("$pkg")
  done
  missing=("${still[@]}")
  [ ${#missing[@]} -gt 0 ] || return 0
  say "Installing Debian packages: ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  missing=()
}

redis_answers() {
  python3 - "$1" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
try:
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=2) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

postgres_answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
docker_answers() { $SUDO docker info >/dev/null 2>&1; }

# Python's venv module (Debian splits ensurepip out of python3).
python3 -c 'import ensurepip, venv' 2>/dev/null || need python3-venv
command -v msgfmt >/dev/null || need gettext
[ "$mode" = test ] && { [ -x /usr/bin/chromium ] || need chromium fonts-noto-core; }
# The Docker engine runs the sandboxes; debootstrap makes the local base image (no registry).
command -v dockerd >/dev/null || need docker.io
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || need iptables
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need debootstrap
redis_url=${REDIS_URL:-redis://127.0.0.1:6379/0}
redis_answers "$redis_url" || command -v redis-server >/dev/null || need redis-server
if [ "$mode" = test ]; then
  postgres_answers || command -v pg_ctlcluster >/dev/null || need postgresql postgresql-client
fi
apt_install

if ! redis_answers "$redis_url"; then
  say "Starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/portal-redis.log
  for _ in $(seq 50); do redis_answers "$redis_url" && break; sleep 0.1; done
  redis_answers "$redis_url" || { echo "Redis did not start; see /tmp/portal-redis.log" >&2; exit 1; }
fi

if ! docker_answers; then
  say "Starting dockerd (log: /tmp/portal-dockerd.log)"
  # No systemd on these machines: run the engine in the background ourselves.
  $SUDO setsid sh -c 'exec dockerd >/tmp/portal-dockerd.log 2>&1 </dev/null' &
  for _ in $(seq 60); do docker_answers && break; sleep 0.5; done
  docker_answers || { echo "dockerd did not start; see /tmp/portal-dockerd.log" >&2; exit 1; }
fi

# The hub's proxy.
if ! command -v configurable-http-proxy >/dev/null; then
  say "Installing configurable-http-proxy (npm)"
  $SUDO npm install -g --silent --no-fund --no-audit configurable-http-proxy >/dev/null
fi

if [ "$mode" = test ] && ! postgres_answers; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  say "Starting PostgreSQL $version"
  cfg=/etc/postgresql/$version/main
  # Trust auth on loopback, as on our CI machines; tests connect as postgres without a password.
  grep -q '^host all all 127.0.0.1/32 trust' "$cfg/pg_hba.conf" 2>/dev/null || \
    sed -i '1i host all all 127.0.0.1/32 trust' "$cfg/pg_hba.conf"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 100); do postgres_answers && break; sleep 0.1; done
  postgres_answers || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
exit 0
