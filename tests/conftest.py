"""Shared pytest configuration: anyio's own plugin, fixed to asyncio; the simulated upstream with a gate."""

from collections.abc import Iterator

import pytest

from tests.support.pool_world import GatedUpstream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    """The simulated upstream (alice, bob, carol) on 127.0.0.1, its consume gate released at the end."""
    sim = GatedUpstream()
    with sim:
        yield sim
        sim.release()
