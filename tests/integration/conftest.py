"""Fixtures for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.loopback import LoopbackService


@pytest.fixture
def service() -> Iterator[LoopbackService]:
    """A fresh loopback HTTP service per test."""
    svc = LoopbackService().start()
    yield svc
    svc.stop()
