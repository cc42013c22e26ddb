# Sovereignty: JupyterLab would fetch its news feed from jupyterlab.github.io and ask PyPI for
# updates (the "official Jupyter news?" prompt). Both off: nothing leaves the deployment.
# (A JSON file in jupyter_server_config.d does not reach LabApp; checked in the built image.)
c = get_config()  # noqa: F821
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
