"""The terminal: where output goes (`UI`), and the same output in ASCII for a terminal that cannot show UTF-8."""

from __future__ import annotations

import errno
import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Final

from rich.console import Console, RenderableType
from rich.text import Text

# -- the terminal ----------------------------------------------------------------------------

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


class _AsciiSafe:
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
    return stream if can_encode(stream) else _AsciiSafe(stream)  # type: ignore[return-value]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would raise SystemExit(1) from inside the task group; `run` turns this into OUTPUT_CLOSED.
        raise BrokenPipeError(errno.EPIPE, "output closed")


def console(file: IO[str]) -> Console:
    return _Console(file=safe_stream(file), highlight=False, soft_wrap=False)


@dataclass
class UI:
    """Where things go: `out` is stdout; in `--json` mode everything meant for a person goes to stderr."""

    as_json: bool = False
    log_level: str | None = None
    """The level asked for on the command line (`--log-level`, `-v`, `-q`): also the spawned server's."""
    out: Console = field(default_factory=lambda: console(sys.stdout))
    err: Console = field(default_factory=lambda: console(sys.stderr))

    @property
    def info(self) -> Console:
        return self.err if self.as_json else self.out

    @property
    def ascii_only(self) -> bool:
        return isinstance(self.out.file, _AsciiSafe)

    def show(self, renderable: RenderableType | str) -> None:
        """Print for a person; a plain string is printed as is (no rich markup)."""
        self.info.print(Text(renderable) if isinstance(renderable, str) else renderable)

    def note(self, renderable: RenderableType | str) -> None:
        """Print for a person on stderr (hints that must not mix with a table or JSON on stdout)."""
        self.err.print(Text(renderable) if isinstance(renderable, str) else renderable)

    def width(self) -> int:
        return self.info.width

    def emit_json(self, value: Any, *, compact: bool = False) -> None:
        """Machine output, written as is: never wrapped to the terminal's width."""
        stream = self.out.file
        plain = can_encode(stream, "é—")
        text = (
            json.dumps(value, ensure_ascii=not plain, separators=(",", ":"))
            if compact
            else json.dumps(value, indent=2, ensure_ascii=not plain)
        )
        stream.write(text + "\n")
        stream.flush()
