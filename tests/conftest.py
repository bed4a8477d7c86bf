"""Shared fixtures: the tiny preview model, built once per test session (it is deterministic), and for the browser
tests the app served in this process and Debian's chromium (one of each per test module)."""

from __future__ import annotations

import os

import browser as helpers  # tests/browser.py (pytest puts this folder on sys.path for its conftest)
import pytest
import support  # tests/support.py

from sprint_demo.models.loading import LoadedPipeline, load_pipeline
from sprint_demo.tools.serve_ray import RAY_SINGLE_NODE_ENV

# Ray reads its single-node switch when it is first imported, and the router's unit tests import Ray while pytest
# collects them, before any Ray test starts Ray: set it here, as serve_ray.start_local_ray does.
os.environ[RAY_SINGLE_NODE_ENV] = "0"


@pytest.fixture(scope="session")
def preview() -> LoadedPipeline:
    return load_pipeline("preview", device="cpu")


@pytest.fixture(scope="module")
def live_app():
    """The app on the preview engine, served in this process on a free loopback port."""
    with support.live_app() as app:
        yield app


@pytest.fixture(scope="module")
def chromium():
    """The launched browser, or None when /usr/bin/chromium is missing (each browser test then fails, saying so)."""
    try:
        helpers.require_chromium()
    except AssertionError:
        yield None
        return
    with helpers.browser() as instance:
        yield instance


@pytest.fixture(scope="module")
def playwright():
    """Playwright's sync API, for tests that launch chromium with flags of their own (the fake camera)."""
    helpers.require_chromium()  # fails, never skips
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance
