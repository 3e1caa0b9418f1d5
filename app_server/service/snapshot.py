"""`statusline.json` in `$CODEX_LIMITS_HOME`: the service's latest account summaries, for `codex-limits statusline`.

The service rewrites it (atomically, 0600) whenever a fresh read changes what it knows; the status line reads
it without connecting to anything. This module is the file: its name, the atomic write, the read, and whether
a service holds the data directory's lock. Standard library only, and only the cheap parts of it (no pathlib,
no typing at run time): the status line runs for every shell prompt and must cost about the interpreter.

The document, `FORMAT` 1:

    {"format": 1, "pid": 4242, "writtenAt": 1700000000,
     "accounts": [<AccountSummary on the wire (camelCase)>, ...],
     "attention": {"<accountId>": "warning" | "critical"}}

`accounts` are `accountPool/list`'s summaries exactly as the wire writes them (`protocol.ext.AccountSummary`);
`attention` names the accounts with an alert condition still in force (see `pool.alerts.AlertRules.attention`).
"""

from __future__ import annotations

import fcntl
import json
import os

from app_server import env as environment

TYPE_CHECKING = False  # `typing` costs the status line milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any, Final

NAME: Final = "statusline.json"
FORMAT: Final = 1
LOCK_NAME: Final = "service.lock"
"""= `service.state.LOCK_NAME` (a test keeps them equal; importing `state` costs the status line ~10 ms)."""


def data_home(env: dict[str, str] | None = None) -> str:
    """`$CODEX_LIMITS_HOME` or `~/.codex-limits`, absolute: `service.state.data_home` without pathlib."""
    return environment.data_home(env)


def path(home: str | os.PathLike[str]) -> str:
    return os.path.join(home, NAME)


def write(home: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Replace the snapshot atomically: a reader sees the old document or the new one, never a part."""
    target = path(home)
    tmp = os.path.join(home, f".{NAME}.{os.getpid()}.tmp")
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def read(home: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The snapshot, or None when there is none. Raises ValueError when it cannot be understood."""
    try:
        with open(path(home), "rb") as f:
            raw = f.read(16 << 20)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path(home)}: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path(home)} is not JSON") from None
    if type(document) is not dict or document.get("format") != FORMAT or type(document.get("accounts")) is not list:
        raise ValueError(f"{path(home)} is not a format-{FORMAT} snapshot")
    return document


def service_running(home: str | os.PathLike[str]) -> bool:
    """True while some process holds the service lock of `home` (as `service.state.lock_held`)."""
    try:
        fd = os.open(os.path.join(home, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
