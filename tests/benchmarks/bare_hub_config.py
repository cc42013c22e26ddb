# The benchmark's baseline: a bare JupyterHub + DockerSpawner (no portal, no OIDC, no spawn
# check) starting the same image on the same docker network. Read by `jupyterhub -f` through
# tests/sandboxes/hub.py's running_hub(config=...), with the same environment names as the
# portal's hub (HUB_PUBLIC_URL, HUB_PROXY_API_PORT, HUB_INTERNAL_PORT, HUB_DATA_DIR,
# HUB_API_TOKEN), so the two are started the same way.
import os
from pathlib import Path
from urllib.parse import urlsplit

from sandboxes.spawner.network import hub_ip

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
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ["BARE_IMAGE"]
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.remove = True
c.DockerSpawner.network_name = os.environ.get("SANDBOX_NETWORK", "nac-sandboxes")
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.cmd = ["jupyterhub-singleuser"]
c.DockerSpawner.start_timeout = 120
