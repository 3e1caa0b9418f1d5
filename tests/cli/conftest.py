"""Fixtures of the CLI tests: fresh homes, and a Codex home signed in to a mock upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.support.cli import DETAILS, USAGE, base_env, details_body, sign_in, usage_body
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


@pytest.fixture
def fast_and_stalled(homes: dict[str, str], tmp_path: Path, backend: MockBackend) -> Iterator[dict[str, str]]:
    """A pool of `fast` (answers at once) and `stalled` (its upstream never answers while the test runs)."""
    backend.set_routes({f"GET {USAGE}": {"json": usage_body(50, 1)}, f"GET {DETAILS}": {"json": details_body(1)}})
    slow = MockBackend()
    slow.start()
    slow.set_routes(
        {
            f"GET {USAGE}": {"json": usage_body(50, 1), "delay": 600},
            f"GET {DETAILS}": {"json": details_body(1), "delay": 600},
        }
    )
    sign_in(tmp_path / "fast", backend)
    sign_in(tmp_path / "stalled", slow)
    data = Path(homes["CODEX_LIMITS_HOME"])
    data.mkdir()
    accounts = [
        {"id": "fast", "label": "Fast", "codex_home": str(tmp_path / "fast")},
        {"id": "stalled", "label": "Stalled", "codex_home": str(tmp_path / "stalled")},
    ]
    (data / "accounts.toml").write_text(tomli_w.dumps({"include_default": False, "accounts": accounts}))
    yield {**homes, "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"{backend.base_url}/oauth/token"}
    slow.stop()
