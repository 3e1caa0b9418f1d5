"""Shared pytest configuration: anyio's own plugin, fixed to asyncio."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
