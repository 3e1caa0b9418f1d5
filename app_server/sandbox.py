"""`--simulate`: a complete throwaway world (simulated upstream, three Codex homes, a pool, a ledger).

Everything lives in a temporary directory that is removed on exit; nothing touches the
operator's real `~/.codex` or `~/.codex-limits`, and no request leaves 127.0.0.1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w

from app_server.config import Settings, Timeouts
from app_server.pool.accounts import FILE_NAME
from app_server.sim.upstream import SimulatedUpstream

FIRST_ACCOUNT = "alice"


@contextmanager
def simulated_world(timeouts: Timeouts | None = None) -> Iterator[tuple[SimulatedUpstream, Settings]]:
    with tempfile.TemporaryDirectory(prefix="codex-limits-sim-") as tmp, SimulatedUpstream() as upstream:
        root = Path(tmp)
        homes = upstream.write_codex_homes(root / "homes")
        data_home = root / "data"
        data_home.mkdir(mode=0o700)
        accounts = [
            {"id": key, "label": upstream.accounts[key].label, "codex_home": str(home)} for key, home in homes.items()
        ]
        with (data_home / FILE_NAME).open("wb") as f:
            tomli_w.dump({"include_default": False, "accounts": accounts}, f)
        yield (
            upstream,
            Settings(
                codex_home=homes[FIRST_ACCOUNT],
                data_home=data_home,
                refresh_url=upstream.refresh_url,
                timeouts=timeouts or Timeouts(),
            ),
        )
