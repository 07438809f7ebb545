"""Headless Chromium (Debian's package) driven by Playwright, and the example site to drive."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from tests.servers import ROOT, Server, run_server
from tests.utils import require_marker

CHROMIUM = os.environ.get("TEMPSTORE_CHROMIUM", "/usr/bin/chromium")
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
SCREENSHOTS = ROOT / "artifacts" / "screenshots" / os.environ.get("TEMPSTORE_TEST_ENV", "local")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium, as .ci/run does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (dependency group 'test')"
    return None


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def example_site(log_dir: Path, *, args: tuple[str, ...] = (), **env: str) -> Iterator[Server]:
    """The example project under gunicorn, on the test database and folders."""
    pythonpath = os.pathsep.join([str(ROOT / "example_project"), str(ROOT)])
    with run_server(
        "gunicorn",
        log_dir,
        args=args,
        DJANGO_SETTINGS_MODULE="tests.example_settings",
        PYTHONPATH=pythonpath,
        **env,
    ) as server:
        yield server


@contextmanager
def chromium() -> Iterator[object]:
    require_marker("browser", "Chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread, which
    # Django mistakes for an async context. The tests' ORM calls are plain sync
    # calls in this thread, so the guard steps aside while the browser runs.
    with (
        mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
