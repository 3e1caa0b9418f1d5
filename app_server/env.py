"""The process environment: the one place that reads it (the lean half of `config`).

Everything the environment decides is read here or in `config` (which builds `Settings` from `current()`),
and passed down from there; no other module reads or writes `os.environ`. Standard library only, and only
its cheapest part (`os`; no pathlib, no typing at run time): the status line and the proxy import this on
every shell prompt and every client spawn.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # `typing` costs the status line milliseconds at start-up
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

DATA_HOME_ENV: Final = "CODEX_LIMITS_HOME"
CODEX_HOME_ENV: Final = "CODEX_HOME"
LOG_ENV: Final = "CODEX_LIMITS_LOG"
SERVICE_LOG_ENV: Final = "CODEX_LIMITS_SERVICE_LOG"
"""Set by `service.control.start` for the service it spawns: the log file its stderr appends to, which it rotates."""


def current() -> Mapping[str, str]:
    """The environment this process was started with (read, never written)."""
    return os.environ


def child(overrides: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: `base` (default: ours) with `overrides` set."""
    merged = dict(current() if base is None else base)
    if overrides:
        merged.update(overrides)
    return merged


def data_home(env: Mapping[str, str] | None = None) -> str:
    """`$CODEX_LIMITS_HOME` or `~/.codex-limits`, absolute (`config.data_home` is this as a Path)."""
    raw = (current() if env is None else env).get(DATA_HOME_ENV)
    return os.path.abspath(os.path.expanduser(raw) if raw else os.path.join(os.path.expanduser("~"), ".codex-limits"))


def codex_home(env: Mapping[str, str] | None = None) -> str:
    """`$CODEX_HOME` or `~/.codex`, absolute (`config.codex_home` is this as a Path)."""
    raw = (current() if env is None else env).get(CODEX_HOME_ENV)
    return os.path.abspath(os.path.expanduser(raw) if raw else os.path.join(os.path.expanduser("~"), ".codex"))


def log_level_asked(env: Mapping[str, str] | None = None) -> bool:
    """`$CODEX_LIMITS_LOG` is set: the operator asked for the server's log."""
    return bool((current() if env is None else env).get(LOG_ENV))


def service_log(env: Mapping[str, str] | None = None) -> str | None:
    """`$CODEX_LIMITS_SERVICE_LOG`: set when this process is the service (see `logs.service_log`)."""
    return (current() if env is None else env).get(SERVICE_LOG_ENV) or None


def no_colour(env: Mapping[str, str] | None = None) -> bool:
    """`NO_COLOR` (https://no-color.org) or a dumb terminal asks for no colour."""
    env = current() if env is None else env
    return bool(env.get("NO_COLOR")) or env.get("TERM") == "dumb"


def terminal(env: Mapping[str, str] | None = None) -> str:
    """`$TERM_PROGRAM[/$TERM_PROGRAM_VERSION]`, else `$TERM`, else `unknown` (not yet header-safe)."""
    env = current() if env is None else env
    program = env.get("TERM_PROGRAM")
    if program:
        version = env.get("TERM_PROGRAM_VERSION")
        return f"{program}/{version}" if version else program
    return env.get("TERM") or "unknown"


def ascii_locale(env: Mapping[str, str] | None = None) -> bool:
    """The user's locale says the terminal shows ASCII only (`LC_ALL=POSIX` or `C`), and no override asks for UTF-8.

    Python then runs in UTF-8 mode (PEP 540) and its streams claim UTF-8, which is not what the terminal shows.
    (A bare `LANG=C` is coerced to C.UTF-8 by Python itself, PEP 538, and is UTF-8 from then on.)"""
    env = current() if env is None else env
    if env.get("PYTHONIOENCODING") or env.get("PYTHONUTF8") == "1":
        return False
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name)
        if value:
            return value in ("C", "POSIX")
    return False


def completing(env: Mapping[str, str] | None = None) -> bool:
    """The shell asks argcomplete for completions (`_ARGCOMPLETE` is set)."""
    return "_ARGCOMPLETE" in (current() if env is None else env)


def terminal_forced(env: Mapping[str, str] | None = None) -> bool | None:
    """Whether output counts as a terminal whatever `isatty` says, as rich decides it: `TTY_COMPATIBLE=1` or a
    non-empty `FORCE_COLOR` (https://force-color.org) say yes, `TTY_COMPATIBLE=0` or an empty `FORCE_COLOR` no;
    None: ask the stream."""
    env = current() if env is None else env
    compatible = env.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = env.get("FORCE_COLOR")
    return None if force is None else force != ""
