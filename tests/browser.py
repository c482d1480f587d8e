"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright
(never a downloaded browser). Screenshots go to tests/artifacts/ (gitignored).

Without Chromium or Playwright the tests fail saying what is missing, never skip:
``scripts/install-test-deps`` (in the README's test line) installs Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # WebGL on the CPU: the 3D viewer needs it, and headless machines have no GPU.
    "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("ATOMIVERSE_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def require_browser() -> str:
    """The Chromium executable, or fail saying what is missing."""
    missing = None
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install '.[test]')"
    if path is None:
        missing = "Chromium (apt-get install chromium)"
    if missing:
        pytest.fail(f"dashboard tests need {missing}", pytrace=False)
    assert path is not None
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright Browser on the system Chromium."""
    from playwright.sync_api import sync_playwright

    path = require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def page_with_views(body: str, views: int) -> Iterator[tuple[Any, list[str]]]:
    """A page showing ``body`` (a notebook's HTML output) once its ``views`` 3D viewers have
    drawn, and the page's script errors (the caller asserts none once done with it)."""
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_content(f"<!doctype html><html><body>{body}</body></html>")
        page.wait_for_function(
            "() => document.querySelectorAll('.atomiverse-view[data-ready=yes]').length === "
            f"{views}", timeout=60_000)
        try:
            yield page, errors
        finally:
            page.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
