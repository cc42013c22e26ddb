#!/usr/bin/env bash
# Install and start what the portal needs from the operating system, only when it is missing.
#   .ci/system-deps.sh run    Redis (when none answers), gettext, python3-venv, the Docker engine
#                             (started when none answers), g++ and CMake (llama-cpp-python's
#                             wheel), configurable-http-proxy (`npm ci` from
#                             the lock in sandboxes/spawner/proxy/), *.localhost names resolving
#                             to loopback for command-line clients (libnss-myhostname)
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
# `make install` builds llama-cpp-python's wheel (the model API's engine) from its sdist once.
command -v g++ >/dev/null || need g++
command -v cmake >/dev/null || need cmake
# Node.js runs the hub's proxy; npm installs it from the lock.
command -v node >/dev/null && command -v npm >/dev/null || need nodejs npm
# `make run` serves portal.localhost, hub.localhost and <user>.hub.localhost. Browsers resolve
# *.localhost to loopback themselves; glibc's resolver (curl, python, the hub's own clients) does
# so only through the myhostname NSS module.
dpkg-query -W -f='${Status}' libnss-myhostname 2>/dev/null | grep -q 'install ok installed' ||
  need libnss-myhostname
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

# `hosts:` in /etc/nsswitch.conf consults myhostname right after files (the order of the
# other sources is kept), so *.localhost resolves to loopback before any DNS server is asked.
nss=/etc/nsswitch.conf
if ! grep -Eq '^hosts:.*[[:space:]]myhostname([[:space:]]|$)' "$nss" 2>/dev/null; then
  say "Adding myhostname to the hosts line of $nss"
  updated=$(awk '
    /^hosts:/ && !done {
      out = $1; placed = 0
      for (i = 2; i <= NF; i++) {
        out = out " " $i
        if ($i == "files" && !placed) { out = out " myhostname"; placed = 1 }
      }
      if (!placed) { out = $1 " myhostname"; for (i = 2; i <= NF; i++) out = out " " $i }
      print out; done = 1; next
    }
    { print }
    END { if (!done) print "hosts: files myhostname dns" }
  ' "$nss" 2>/dev/null || echo "hosts: files myhostname dns")
  printf '%s\n' "$updated" | $SUDO tee "$nss" >/dev/null
fi
for name in portal.localhost x.hub.localhost; do
  getent hosts "$name" | awk '{ print $1 }' | grep -Eq '^(127\.|::1$)' || {
    echo "$name does not resolve to loopback (getent hosts $name); see $nss" >&2
    exit 1
  }
done

# The hub's proxy, configurable-http-proxy: exactly the versions and integrity hashes in
# sandboxes/spawner/proxy/package-lock.json, from whatever registry npm is configured with here
# (an air-gapped site's mirror), into sandboxes/spawner/proxy/node_modules (what the hub runs).
# Again only when the lock changed. No install scripts run (the folder's .npmrc).
proxy=$(cd "$(dirname "$0")/../sandboxes/spawner/proxy" && pwd)
proxy_stamp=$(cat "$proxy/package.json" "$proxy/package-lock.json" | sha256sum | cut -c1-64)
if [ "$(cat "$proxy/node_modules/.nac-installed" 2>/dev/null)" != "$proxy_stamp" ] ||
  [ ! -x "$proxy/node_modules/.bin/configurable-http-proxy" ]; then
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "configurable-http-proxy needs Node.js 20 or newer; this machine has $(node --version)." >&2
    echo "Install Node.js 20+ (e.g. from your site's mirror of NodeSource), then run this again." >&2
    exit 1
  fi
  say "Installing configurable-http-proxy from its lock (npm ci in ${proxy#"$PWD"/})"
  (cd "$proxy" && npm ci --silent)
  echo "$proxy_stamp" >"$proxy/node_modules/.nac-installed"
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
