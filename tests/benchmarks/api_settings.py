"""Settings of the server that bench_api.py and the connection soak test start: the portal's
development settings (what `make run` serves), with a URLconf that adds the bench's own views
(api_urls). Nothing in the portal imports this module: the bench views are never shipped."""

from portal.settings.local import *  # noqa: F403

ROOT_URLCONF = "tests.benchmarks.api_urls"
