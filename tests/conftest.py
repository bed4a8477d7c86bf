"""Shared fixtures: the tiny preview model, built once per test session (it is deterministic)."""

from __future__ import annotations

import pytest

from sprint_demo.models import LoadedPipeline, load_pipeline


@pytest.fixture(scope="session")
def preview() -> LoadedPipeline:
    return load_pipeline("preview", device="cpu")
