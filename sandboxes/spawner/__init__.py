"""The hub side of sandboxes: the portal-driven DockerSpawner, the sandbox networks, the hub config.

Plain Python (no Django): it runs inside the JupyterHub process and its start script.
"""
