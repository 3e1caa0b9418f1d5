"""The server's log on stderr: bounded whatever happens.

`setup` installs one `StderrHandler` for `serve` and the service. It collapses a run of identical records
(same level, logger, message and exception): the first `REPEAT_BURST` are written, the rest only counted
and said as `… repeated N more times` when a different record arrives, every `window` seconds while the run
lasts, and at exit. When this process is
the service, its stderr is the data directory's `service.log` (`service.control.start` says so in
`CODEX_LIMITS_SERVICE_LOG`): the handler then rotates that file when it reaches `CODEX_LIMITS_LOG_MAX_BYTES`
(`service.log` -> `service.log.1`, one generation kept) and points stderr (file descriptor 2) at the new
file, so what is written to stderr without logging lands there too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TextIO

from app_server import env as environment

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_WINDOW: Final = 60.0
"""Seconds between two `… repeated N more times` lines while the same record keeps coming."""
REPEAT_BURST: Final = 5
"""Identical records in a row written as they are before the rest are only counted (a few in a row are
ordinary: the same malformed line sent twice gets its warning twice)."""

_Key = tuple[int, str, str, str]


def _key(record: logging.LogRecord) -> _Key:
    exc = record.exc_info[1] if record.exc_info else None
    return record.levelno, record.name, record.getMessage(), "" if exc is None else f"{type(exc).__name__}: {exc}"


class StderrHandler(logging.StreamHandler[TextIO]):
    """stderr, with runs of identical records collapsed, and (`rotate`) the file behind stderr rotated."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        rotate: Path | None = None,
        max_bytes: int = 0,
        window: float = REPEAT_WINDOW,
        burst: int = REPEAT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._rotate = rotate
        self._max_bytes = max_bytes
        self._window = window
        self._burst = burst
        self._run = 0
        self._clock = clock
        self._last: _Key | None = None
        self._last_record: logging.LogRecord | None = None
        self._repeats = 0
        self._said_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        key = _key(record)
        now = self._clock()
        if key == self._last:
            if self._run < self._burst:
                self._run += 1
                self._write(record)
                return
            self._repeats += 1
            if now - self._said_at >= self._window:
                self._say_repeats(now)
            return
        self._say_repeats(now)
        self._last, self._last_record, self._said_at, self._run = key, record, now, 1
        self._write(record)

    def _say_repeats(self, now: float) -> None:
        last = self._last_record
        if self._repeats and last is not None:
            note = logging.makeLogRecord(
                {
                    "name": last.name,
                    "levelno": last.levelno,
                    "levelname": last.levelname,
                    "msg": "… repeated %d more time%s",
                    "args": (self._repeats, "" if self._repeats == 1 else "s"),
                }
            )
            self._write(note)
        self._repeats = 0
        self._said_at = now

    def _write(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self._rotate is not None and self._max_bytes > 0:
            try:
                self._rotate_if_full()
            except OSError as exc:
                path, self._rotate = self._rotate, None  # never again: a failing rotation must not break logging
                self.stream.write(f"cannot rotate {path}: {exc}; the log is no longer rotated\n")

    def _rotate_if_full(self) -> None:
        assert self._rotate is not None
        self.stream.flush()
        fd = self.stream.fileno()
        if os.fstat(fd).st_size < self._max_bytes:
            return
        path = self._rotate
        os.replace(path, path.with_name(path.name + ".1"))
        fresh = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.dup2(fresh, fd)
        finally:
            os.close(fresh)

    def close(self) -> None:
        """Say how often the last record repeated (logging.shutdown closes every handler at exit)."""
        self.acquire()
        try:
            self._say_repeats(self._clock())
        finally:
            self.release()
        super().close()


def service_log(env: Mapping[str, str], stream: TextIO) -> Path | None:
    """The service log behind `stream`, when this process is the service and `stream` really writes to it."""
    raw = environment.service_log(env)
    if not raw:
        return None
    path = Path(raw)
    try:
        if os.path.samestat(os.fstat(stream.fileno()), os.stat(path)):
            return path
    except (OSError, ValueError):
        pass
    return None


def setup(level: str, stream: TextIO, env: Mapping[str, str] | None = None) -> StderrHandler:
    """Logging at `level` (a name such as `INFO`) to `stream` (stderr) through one `StderrHandler`; returns it."""
    from app_server.config import log_max_bytes

    env = environment.current() if env is None else env
    handler = StderrHandler(stream, rotate=service_log(env, stream), max_bytes=log_max_bytes(env))
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), handlers=[handler])
    return handler
