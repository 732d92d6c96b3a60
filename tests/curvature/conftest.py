"""Fixtures for the curvature tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dufm_core.runtime import cpu_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These problems are tiny: one thread is faster, and steady on a busy machine."""
    with cpu_threads(1):
        yield
