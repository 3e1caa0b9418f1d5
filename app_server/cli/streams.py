"""Where the operator commands write: stdout and stderr as they are, or in ASCII for a terminal that cannot
show UTF-8; JSON output; the one stderr line of a failure. Standard library only (the quick paths use it)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import IO, Any, Final

_ASCII: Final = str.maketrans(
    {
        "█": "#",
        "░": "-",
        "—": "-",
        "–": "-",
        "·": "-",
        "✓": "+",
        "✗": "x",
        "⚠": "!",
        "→": "->",
        "…": "...",
        "’": "'",
        "‘": "'",
        "“": '"',
        "”": '"',
        "•": "*",
    }
)


def can_encode(stream: IO[str], text: str = "█—✓") -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class AsciiSafe:
    """A text stream for a terminal that cannot show our glyphs: they become ASCII, the rest `?`."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.encoding = "ascii"

    def write(self, text: str) -> int:
        safe = text.translate(_ASCII).encode("ascii", "replace").decode("ascii")
        return self._stream.write(safe)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


def safe_stream(stream: IO[str]) -> IO[str]:
    """`stream`, or an ASCII-only view of it when its encoding cannot show our output."""
    return stream if can_encode(stream) else AsciiSafe(stream)  # type: ignore[return-value]


def write_json(stream: IO[str], value: Any, *, compact: bool = False) -> None:
    """Machine output, written as is: never wrapped to the terminal's width; non-ASCII kept where the stream
    can encode it."""
    plain = can_encode(stream, "é—")
    text = (
        json.dumps(value, ensure_ascii=not plain, separators=(",", ":"))
        if compact
        else json.dumps(value, indent=2, ensure_ascii=not plain)
    )
    stream.write(text + "\n")
    stream.flush()


def fail_line(message: str) -> None:
    """`codex-limits: <message>` on stderr, on one line."""
    line = " ".join(message.split())
    err = safe_stream(sys.stderr)
    with contextlib.suppress(OSError):
        err.write(f"codex-limits: {line}\n")
        err.flush()


def is_terminal(stream: IO[str]) -> bool:
    """Whether `stream` is a terminal to render for, as rich's `Console.is_terminal` decides it (so the quick
    paths and the rich views agree on when the table is drawn)."""
    from app_server import env

    forced = env.terminal_forced()
    if forced is not None:
        return forced
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def quiet_stdout() -> None:
    """Whoever read stdout stopped (`... | head`): point it at /dev/null, so the final flush says nothing."""
    import os

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
