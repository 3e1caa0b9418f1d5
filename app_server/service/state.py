"""Where the service lives in `$CODEX_LIMITS_HOME`, the lock that makes it one, and the state it publishes.

* `service.sock`: the socket path (a symlink into a private directory, see `rpc.listeners`);
* `service.lock`: held (flock) by the running service for its whole life, so exactly one runs per
  data directory; the kernel drops it when the process dies, even by SIGKILL;
* `service.json`: pid, socket, listeners, start time and the token file of its ws:// listeners, written
  once the service answers;
* `service-token`: the capability token `service start` made for its ws:// listeners (see `service.token`).

Standard library only: `codex-limits proxy` imports this.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from app_server import env as environment

SOCKET_NAME: Final = "service.sock"
LOCK_NAME: Final = "service.lock"
STATE_NAME: Final = "service.json"
LOG_NAME: Final = "service.log"


def data_home(env: Mapping[str, str] | None = None) -> Path:
    """`$CODEX_LIMITS_HOME` or `~/.codex-limits` (`env.data_home`, the one rule)."""
    return Path(environment.data_home(env))


def codex_home(env: Mapping[str, str] | None = None) -> Path:
    """`$CODEX_HOME` or `~/.codex` (`env.codex_home`)."""
    return Path(environment.codex_home(env))


def socket_path(home: Path) -> Path:
    return home / SOCKET_NAME


class AlreadyRunning(Exception):
    """Another service holds the lock of this data directory."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"the service is already running (pid {pid})" if pid else "the service is already running")
        self.pid = pid


class State(NamedTuple):
    """The running service's state file: its pid, socket, listeners, start time and Codex home.

    A named tuple, not a dataclass: `dataclasses` imports `inspect`, milliseconds of every quick command."""

    pid: int
    socket: str
    listen: list[str]
    started_at: float
    codex_home: str
    """The service acts on this `$CODEX_HOME`'s account: a client with another one must not use it."""
    token_file: str | None = None
    """The capability token its ws:// listeners require (`service.token.bearer_headers`), if any."""
    simulated: bool = False
    """Started with `--simulate`: its accounts are the simulated world's (`codex_home` is that world's)."""

    def uptime(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.started_at)


class ServiceLock:
    """The data directory's service lock, held until `release` (or the process ends)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.home / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # `lock_held` takes the lock shared for an instant: a few retries tell that from a running service.
        for attempt in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    os.close(fd)
                    state = read_state(self.home)
                    raise AlreadyRunning(state.pid if state else None) from None
                time.sleep(0.02)
        self._fd = fd

    def publish(self, state: State) -> None:
        """Write `service.json` atomically (0600): from now on clients find the service."""
        path = self.home / STATE_NAME
        tmp = path.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state._asdict(), f)
        os.replace(tmp, path)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.home / STATE_NAME).unlink()
        os.close(self._fd)
        self._fd = None


def lock_held(home: Path) -> bool:
    """True while some process holds the service lock of `home`."""
    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


MAX_STATE_BYTES: Final = 64 * 1024
"""service.json is a few hundred bytes: anything larger (or not a regular file) is not one we wrote."""


def _read_small(path: Path) -> bytes:
    """`files.read_regular` in the standard library (the proxy reads this): never blocks, never grows."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = os.read(fd, MAX_STATE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_STATE_BYTES} bytes")
    return data


def read_state(home: Path) -> State | None:
    try:
        raw: Any = json.loads(_read_small(home / STATE_NAME).decode("utf-8"))
        listen = [str(u) for u in raw["listen"]]
        token_file = raw.get("token_file")
        return State(
            int(raw["pid"]),
            str(raw["socket"]),
            listen,
            float(raw["started_at"]),
            str(raw["codex_home"]),
            str(token_file) if token_file is not None else None,
            raw.get("simulated") is True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(home: Path) -> State | None:
    """The published state of the service of `home`, if one holds the lock."""
    state = read_state(home)
    if state is None or not lock_held(home):
        return None
    return state


def answers(path: Path | str, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the Unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(os.path.realpath(path))
        except OSError:
            return False
    return True
