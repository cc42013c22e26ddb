"""Browser fixtures: one Chromium for these tests, a fresh context per person, a request log.

Playwright's sync API keeps an asyncio event loop running in the test thread from start to stop,
and Django refuses ORM calls from a thread with a running loop. The ORM calls these tests (and
pytest-django's flush) make are ordinary blocking ones, so DJANGO_ALLOW_ASYNC_UNSAFE is set while
Playwright runs. Both live for this package only, not the session: the rest of the suite keeps
Django's async-safety check, and subprocesses it starts (`manage.py check --deploy` refuses the
variable) do not inherit it.
"""

import contextlib
import os
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000
LOCAL_SCHEMES = {"data", "blob"}


@pytest.fixture(scope="package")
def _orm_beside_playwright() -> Iterator[None]:
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, closed on the way out."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def browser(_orm_beside_playwright) -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class RequestLog:
    """Every URL the watched browser contexts asked for, to prove nothing left the deployment."""

    def __init__(self, origin: str):
        self.netloc = urlsplit(origin).netloc
        self.urls: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        context.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    def off_host(self) -> list[str]:
        return [
            url
            for url in self.urls
            if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).netloc != self.netloc
        ]

    def assert_only_live_server(self) -> None:
        assert self.urls, "no request was recorded: the request log is not attached"
        off_host = self.off_host()
        assert not off_host, f"requests to hosts other than {self.netloc}:\n" + "\n".join(off_host)


@pytest.fixture
def request_log(live_server) -> RequestLog:
    return RequestLog(live_server.url)


@pytest.fixture
def new_context(browser, live_server, request_log) -> Iterator[Callable[[], BrowserContext]]:
    """Make a browser context (a separate person: own cookies) whose requests are logged."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(base_url=live_server.url, locale="en-GB")
        context.set_default_timeout(TIMEOUT_MS)
        request_log.watch(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context) -> Page:
    return new_context().new_page()
