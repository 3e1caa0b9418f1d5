"""Fixtures of the fault-injection tests: the pool world on each store (SQLite, and a fresh database on
the session's throwaway PostgreSQL cluster), as in the pool tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pool_world import GatedUpstream, World, make_world
from tests.support.postgres import pg_url, postgres_cluster, postgres_url
from tests.support.store_backends import StoreBackend, store_backend

__all__ = ["pg_url", "postgres_cluster", "postgres_url", "store_backend"]


@pytest.fixture
def world(upstream: GatedUpstream, tmp_path: Path, store_backend: StoreBackend) -> World:
    return make_world(upstream, tmp_path, store_backend)
