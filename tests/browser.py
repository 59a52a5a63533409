"""Browser test fixtures: a live uvicorn server per app and headless Debian Chromium with the internet cut off.

Loaded from tests/conftest.py (`pytest_plugins = ["tests.browser"]`). Pages must work on an intranet, so
`page_offline` aborts every request to a host other than loopback and records it, together with console errors,
uncaught page errors and failed local responses, so a test can assert there were none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("GRIDATLAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "var" / "screenshots"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Schemes that never leave the page (inline data, in-memory blobs, the browser's own pages).
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome", "chrome-error", "devtools"})


# ---------------------------------------------------------------------------------------------------------------
# live server


@contextlib.contextmanager
def serve(app, startup_timeout: float = 15.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread on a free loopback port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before uvicorn starts: no race for the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {startup_timeout} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live_server() -> Iterator[Callable[[object], str]]:
    """A factory: `base_url = live_server(app)` serves `app` until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(serve(app))


# ---------------------------------------------------------------------------------------------------------------
# browser


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (session-wide); skips if either is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return (parts.hostname or "") in LOCAL_HOSTS


@dataclass
class OfflinePage:
    """A page opened with the internet cut off, and what went wrong while it loaded."""

    page: object  # playwright.sync_api.Page
    external_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)  # local responses with status >= 400

    @property
    def problems(self) -> dict[str, list[str]]:
        """Every non-empty list of problems, by kind (empty dict when the page loaded cleanly)."""
        kinds = {
            "external_requests": self.external_requests,
            "console_errors": self.console_errors,
            "page_errors": self.page_errors,
            "failed_responses": self.failed_responses,
        }
        return {k: v for k, v in kinds.items() if v}


def open_offline(browser, url: str, *, viewport=(1280, 800), wait_until: str = "networkidle",
                 locale: str = "zh-CN", timeout_ms: float = 30_000) -> tuple[OfflinePage, object]:
    """Open `url` in a fresh context where non-loopback requests are aborted and recorded; returns (result, context)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale=locale)
    result = OfflinePage(page=None)

    def _route(route):
        req_url = route.request.url
        if _is_local(req_url):
            route.continue_()
        else:
            result.external_requests.append(req_url)
            route.abort("internetdisconnected")

    context.route("**/*", _route)
    page = context.new_page()
    result.page = page

    def _console(msg):
        if msg.type == "error":
            loc = msg.location or {}
            result.console_errors.append(f"{msg.text} @ {loc.get('url', '')}:{loc.get('lineNumber', '')}")

    def _response(resp):
        if resp.status >= 400 and _is_local(resp.url):
            result.failed_responses.append(f"{resp.status} {resp.url}")

    page.on("console", _console)
    page.on("pageerror", lambda exc: result.page_errors.append(str(exc)))
    page.on("response", _response)
    page.goto(url, wait_until=wait_until, timeout=timeout_ms)
    return result, context


@pytest.fixture
def page_offline(browser) -> Iterator[Callable[..., OfflinePage]]:
    """A factory: `res = page_offline(url)` opens `url` offline; check `res.problems == {}`, use `res.page`."""
    contexts = []

    def _open(url: str, **kw) -> OfflinePage:
        result, context = open_offline(browser, url, **kw)
        contexts.append(context)
        return result

    yield _open
    for context in contexts:
        context.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    """Save a PNG of `page` as var/screenshots/<name>.png and return its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
