#!/usr/bin/env bash
# Start the portal's JupyterHub (the `hub:` process of `make run`).
#   1. the sandbox docker networks and host firewall (idempotent; needs root and dockerd)
#   2. `jupyterhub upgrade-db` when a database from an older hub exists
#   3. exec jupyterhub with sandboxes/spawner/jupyterhub_config.py, cwd = $HUB_DATA_DIR
# Settings come from the environment (make run passes var/hub.env; see jupyterhub_config.py).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VIRTUAL_ENV:-$repo/.venv}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
data_dir=${HUB_DATA_DIR:-$repo/var/hub}
case $data_dir in /*) ;; *) data_dir=$repo/$data_dir ;; esac
export HUB_DATA_DIR=$data_dir
mkdir -p "$data_dir"
chmod 700 "$data_dir"

"$venv/bin/python" -m sandboxes.spawner.network ensure

config=$repo/sandboxes/spawner/jupyterhub_config.py
cd "$data_dir"
if [ -f jupyterhub.sqlite ]; then
  "$venv/bin/jupyterhub" upgrade-db -f "$config"
fi
exec "$venv/bin/jupyterhub" -f "$config"
