"""The terminal: where output goes (`UI`), and the same output in ASCII for a terminal that cannot show UTF-8."""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.text import Text

from app_server.cli.streams import AsciiSafe, safe_stream, write_json


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
        return isinstance(self.out.file, AsciiSafe)

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
        write_json(self.out.file, value, compact=compact)
