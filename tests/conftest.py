"""Shared fixtures: the tiny preview model, built once per test session (it is deterministic)."""

from __future__ import annotations

import pytest

from sprint_demo.models import LoadedPipeline, load_pipeline


@pytest.fixture(scope="session")
def preview() -> LoadedPipeline:
    return load_pipeline("preview", device="cpu")


@pytest.fixture(scope="session")
def preview_engine():
    from sprint_demo.engine import load_engine

    return load_engine("preview", device="cpu")
