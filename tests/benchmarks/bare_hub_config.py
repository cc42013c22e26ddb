# The benchmark's baseline: a bare JupyterHub + DockerSpawner (no portal, no OIDC, no spawn
# check) starting the same image on the same docker network. Read by `jupyterhub -f` through
# tests/sandboxes/hub.py's running_hub(config=...), with the same environment names as the
# portal's hub (HUB_PUBLIC_URL, HUB_PROXY_API_PORT, HUB_INTERNAL_PORT, HUB_DATA_DIR,
# HUB_API_TOKEN), so the two are started the same way.
#
# Its containers are the portal's, option for option, so that the comparison measures the portal
# and not a lighter container: bench_sandboxes.py passes the profile's figures (BARE_CPU_LIMIT,
# BARE_MEM_LIMIT_BYTES, BARE_SHM_SIZE_BYTES, BARE_PIDS_LIMIT, BARE_DISK_BYTES, BARE_EGRESS) and
# a prefix for the home volumes (BARE_VOLUME_PREFIX), and set here as PortalSpawner's
# apply_spawn_spec and jupyterhub_config.py set them; the benchmark compares the two containers.
import os
from pathlib import Path
from urllib.parse import urlsplit

import docker

from sandboxes.spawner.network import hub_ip, sandbox_dns_servers
from sandboxes.spawner.spawner import HOME, SANDBOX_USER, storage_size_supported

c = get_config()  # noqa: F821
data_dir = Path(os.environ["HUB_DATA_DIR"])
public = urlsplit(os.environ["HUB_PUBLIC_URL"])
c.JupyterHub.bind_url = f"http://127.0.0.1:{public.port}/"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['HUB_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
c.ConfigurableHTTPProxy.command = [  # the same pinned proxy as the portal's hub
    str(
        Path(__file__).resolve().parents[2]
        / "sandboxes/spawner/proxy/node_modules/.bin/configurable-http-proxy"
    )
]
c.JupyterHub.hub_ip = hub_ip()
c.JupyterHub.hub_port = int(os.environ["HUB_INTERNAL_PORT"])
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'bare.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "cookie_secret")
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 0
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.JupyterHub.services = [{"name": "bench", "api_token": os.environ["HUB_API_TOKEN"]}]
c.JupyterHub.load_roles = [
    {"name": "bench", "services": ["bench"], "scopes": ["admin:users", "list:users", "servers"]}
]

# --- the container: the same as the portal's spawn spec makes it ------------------------------

egress = os.environ["BARE_EGRESS"]
mem_limit = int(os.environ["BARE_MEM_LIMIT_BYTES"])
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ["BARE_IMAGE"]
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.remove = True
c.DockerSpawner.network_name = (
    os.environ.get("SANDBOX_NETWORK", "nac-sandboxes")
    if egress == "open"
    else os.environ.get("SANDBOX_NETWORK_INTERNAL", "nac-sandboxes-internal")
)
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.start_timeout = 120
c.DockerSpawner.http_timeout = 60
c.DockerSpawner.default_url = "/lab"
c.DockerSpawner.notebook_dir = HOME
c.DockerSpawner.disable_user_config = True
c.DockerSpawner.cpu_limit = float(os.environ["BARE_CPU_LIMIT"])
c.DockerSpawner.mem_limit = mem_limit
c.DockerSpawner.environment = {"NVIDIA_VISIBLE_DEVICES": "void"}
c.DockerSpawner.mounts = [
    {"type": "volume", "source": os.environ["BARE_VOLUME_PREFIX"] + "{username}", "target": HOME}
]
host_config = {
    "shm_size": int(os.environ["BARE_SHM_SIZE_BYTES"]),
    "pids_limit": int(os.environ["BARE_PIDS_LIMIT"]),
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "memswap_limit": mem_limit,
}
if dns := sandbox_dns_servers(egress):
    host_config["dns"] = dns
disk_bytes = int(os.environ["BARE_DISK_BYTES"])
engine = docker.from_env()
if disk_bytes and storage_size_supported(engine.info()):
    host_config["storage_opt"] = {"size": str(disk_bytes)}
engine.close()
c.DockerSpawner.extra_host_config = host_config
c.DockerSpawner.extra_create_kwargs = {"user": SANDBOX_USER}
