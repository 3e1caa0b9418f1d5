"""Start, stop and find the service of a data directory (standard library only: the proxy uses it).

`start` spawns `python -m app_server --listen unix://` in its own session, detached from the
caller's terminal, its stderr appended to `service.log` (which the service rotates at a size: see
`app_server.logs`), and returns once it answers on its socket.
`stop` sends SIGTERM: the service stops accepting connections, answers every request it has,
then exits (as a stdio server does at end of input).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from app_server import env as environment
from app_server.env import SERVICE_LOG_ENV
from app_server.service.state import LOG_NAME, State, answers, running, socket_path

START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 30.0
"""The service's own shutdown grace is 10 s per connection; closing takes a little more."""


class ServiceError(Exception):
    """The service could not be started or stopped; the text says why."""


def service_command(
    listen: Sequence[str] = (), log_level: str | None = None, ws: Sequence[str] = (), *, simulate: bool = False
) -> list[str]:
    """The service's command line; `ws` are `serve`'s `--ws-auth …` options for the ws:// listeners;
    `simulate`: the simulated world's made-up accounts instead of the real ones."""
    command = [sys.executable, "-m", "app_server", "--listen", "unix://", *(["--simulate"] if simulate else [])]
    for url in listen:
        command += ["--listen", url]
    return command + list(ws) + (["--log-level", log_level] if log_level else [])


def _log_tail(path: Path, since: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(since, f.seek(0, os.SEEK_END) - 64 * 1024))  # the last line is near the end
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].removeprefix("codex-limits serve: ")[:300] if lines else ""


def start(
    home: Path,
    *,
    listen: Sequence[str] = (),
    log_level: str | None = None,
    ws: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    simulate: bool = False,
) -> tuple[State, bool]:
    """The running service of `home`, started if needed; True when this call started it."""
    state = running(home)
    if state is not None:
        return state, False
    log_path = home / LOG_NAME
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:  # a data directory this user cannot create or write
        raise ServiceError(f"cannot use the data directory {home}: {exc.strerror or exc}") from None
    since = os.lseek(fd, 0, os.SEEK_END)
    try:
        child = subprocess.Popen(
            service_command(listen, log_level, ws, simulate=simulate),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            start_new_session=True,  # a Ctrl-C in the caller's terminal must not reach the service
            env=environment.child({environment.DATA_HOME_ENV: str(home), SERVICE_LOG_ENV: str(log_path)}, env),
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = running(home)
        if state is not None and answers(state.socket):
            return state, state.pid == child.pid
        if child.poll() is not None:
            # Another starter may have won the race for the lock: its service is as good as ours.
            state = running(home)
            if state is not None:
                continue
            tail = _log_tail(log_path, since)
            raise ServiceError(f"the service exited with status {child.returncode}" + (f": {tail}" if tail else ""))
        time.sleep(0.01)
    raise ServiceError(f"the service did not answer within {timeout:g} s (see {log_path})")


def stop(home: Path, *, timeout: float = STOP_TIMEOUT) -> State | None:
    """SIGTERM the running service and wait until it is gone; None when none was running."""
    state = running(home)
    if state is None:
        return None
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return state
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(home) is None:
            return state
        time.sleep(0.02)
    raise ServiceError(f"the service (pid {state.pid}) did not stop within {timeout:g} s")


def find(home: Path, codex_home: Path) -> State | None:
    """The running service of `home` that acts on `codex_home`, if it answers."""
    state = running(home)
    if state is None or Path(state.codex_home) != codex_home or not answers(state.socket):
        return None
    return state


def default_socket(home: Path) -> Path:
    return socket_path(home)
