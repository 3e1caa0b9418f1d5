"""Import budgets, by module list (never by time): what each fast path may load before it answers.

* `python -m app_server` answers `initialize` without anything heavy (httpx, the pool, the store, rich, ...),
  and the only modules of ours it loads are `START_UP`: a module joining the start-up path fails here until
  it is either loaded on first use instead or added on purpose;
* `codex-limits statusline` and `--version` load, beyond what `python -c "import json"` loads, only the
  modules listed here (no argparse, no pydantic, no asyncio: they run on every shell prompt).

Measured with `python -X importtime`, which lists every module the process imports, until it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    "argparse",
    "http.client",
    "urllib.request",
    "app_server.pool.pool",
    "app_server.pool.accounts",
    "app_server.pool.monitor",
    "app_server.pool.snapshot",
    "app_server.store.sqlite",
    "app_server.upstream.backend",
    "app_server.dashboard",
    "app_server.cli",
    "protocol.schema",
    "prometheus_client",
    "app_server.metrics",
)
START_UP = frozenset(
    {
        "app_server",
        "app_server.config",
        "app_server.errors",
        "app_server.env",
        "app_server.files",
        "app_server.handlers",
        "app_server.handlers.account",
        "app_server.handlers.context",
        "app_server.handlers.inventory",
        "app_server.handlers.pool",
        "app_server.handlers.usage",
        "app_server.logs",
        "app_server.pool",
        "app_server.pool.errors",
        "app_server.rpc",
        "app_server.rpc.codec",
        "app_server.rpc.context",
        "app_server.rpc.dispatcher",
        "app_server.rpc.framing",
        "app_server.rpc.outbox",
        "app_server.rpc.sessions",
        "app_server.rpc.stdio",
        "app_server.server",
        "app_server.service",
        "app_server.service.state",
        "app_server.world",
        "app_server.store",
        "app_server.store.base",
        "app_server.upstream",
        "app_server.upstream.errors",
        "app_server.upstream.useragent",
        "protocol",
        "protocol._model",
        "protocol.ext",
        "protocol.jsonrpc",
        "protocol.methods",
        "protocol.strict_json",
        "protocol.v1",
        "protocol.v2",
        "protocol.validation",
    }
)
"""Our modules on the way to the first answer (`rpc.client`/`rpc.memory` come with `server`'s in-memory helpers)."""
STATUSLINE_EXTRA = frozenset(
    {
        "app_server",
        "app_server.cli",
        "app_server.cli.statusline",
        "app_server.env",
        "app_server.service",
        "app_server.service.snapshot",
    }
    | {"fcntl", "signal", "runpy"}
)
VERSION_EXTRA = frozenset({"app_server", "app_server.cli", "runpy"})
INIT = {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "title": None, "version": "1.0"}}}


def imported_modules(stderr: str) -> set[str]:
    modules = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name)
    return modules


def importtime(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).parent,  # not the repository root: the installed package, as a client spawns it
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return imported_modules(result.stderr)


def under(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in names))


def test_initialize_over_stdio_imports_nothing_heavy() -> None:
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
    assert under(modules, HEAVY) == []
    ours = {m for m in modules if m.split(".")[0] in ("app_server", "protocol")}
    assert sorted(ours - START_UP) == [], "new on the start-up path: load it on first use, or add it to START_UP"


def test_statusline_and_version_load_about_the_interpreter(tmp_path: Path) -> None:
    env = {**os.environ, "CODEX_LIMITS_HOME": str(tmp_path)}
    floor = importtime("-c", "import json", env=env)
    statusline = importtime("-m", "app_server.cli.launch", "statusline", env=env)
    assert "app_server.service.snapshot" in statusline
    assert sorted(statusline - floor - STATUSLINE_EXTRA) == []
    version = importtime("-m", "app_server.cli.launch", "--version", env=env)
    assert sorted(version - floor - VERSION_EXTRA) == []
