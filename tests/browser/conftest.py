"""Headless Chromium through Playwright: Debian's `chromium` (Playwright cannot download browsers here).

The tests skip, saying why, when Playwright or chromium is missing; CI (.ci/run) installs both.
Set FEATUREMAPS_CHROMIUM to use another Chromium executable.
"""
from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str | None:
    return os.environ.get("FEATUREMAPS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope: Playwright's sync API keeps an asyncio loop running in this thread until it stops,
# which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed: pip install -e '.[browser]'")
    path = chromium_path()
    if not path:
        pytest.skip("no chromium executable: apt-get install chromium (or set FEATUREMAPS_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page whose console errors and uncaught exceptions are collected in page.errors."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


@pytest.fixture(scope="module")
def server(reference_artifacts):
    """A real `python -m runtime serve` of the reference artifacts, for one test module's pages."""
    from serving import Server  # tests/serving.py; here, so that benchmarks/gallery_site.py can import chromium_path

    server = Server(reference_artifacts)
    yield server
    server.stop()
