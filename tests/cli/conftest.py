"""Fixtures of the CLI tests: fresh homes, and a Codex home signed in to a mock upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import base_env, sign_in
from tests.support.mock_backend import MockBackend


@pytest.fixture
def homes(tmp_path: Path) -> dict[str, str]:
    """An environment whose Codex and codex-limits homes are fresh temp dirs."""
    return base_env(tmp_path)


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        yield mock


@pytest.fixture
def signed_in(homes: dict[str, str], backend: MockBackend) -> dict[str, str]:
    """`$CODEX_HOME` signed in to the mock backend; the pool is just `default`."""
    sign_in(Path(homes["CODEX_HOME"]), backend)
    return {**homes, "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"{backend.base_url}/oauth/token"}
