"""Fixtures shared by the pool tests (in memory and across processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pool_world import GatedUpstream, World, make_world


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    sim = GatedUpstream()
    with sim:
        yield sim
        sim.release()


@pytest.fixture
def world(upstream: GatedUpstream, tmp_path: Path) -> World:
    return make_world(upstream, tmp_path)
