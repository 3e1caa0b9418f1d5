"""The start-up import budget: `python -m app_server` answers `initialize` without loading anything heavy.

Measured with `python -X importtime`, which lists every module the process imports, until it exits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

HEAVY = (
    "httpx",
    "httpcore",
    "sqlite3",
    "tomllib",
    "tomli_w",
    "rich",
    "filelock",
    "websockets",
    "starlette",
    "uvicorn",
    "psycopg",
    "psycopg_pool",
    "backports.zstd",
    "app_server.pool.pool",
    "app_server.pool.accounts",
    "app_server.pool.monitor",
    "app_server.store.sqlite",
    "app_server.upstream.backend",
    "app_server.dashboard",
)
INIT = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}}


def imported_modules(stderr: str) -> set[str]:
    modules = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name)
    return modules


def test_initialize_over_stdio_imports_nothing_heavy(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app_server"],
        input=json.dumps(INIT) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.splitlines()[0])
    assert answer["id"] == 0 and "userAgent" in answer["result"]
    modules = imported_modules(result.stderr)
    assert "app_server.rpc.dispatcher" in modules  # the measurement sees our own modules
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []
