"""Asking the operator: is there a terminal to ask on, and a yes/no question that Ctrl-C can cancel."""

from __future__ import annotations

import sys
import threading

import anyio

from app_server.cli.terminal import UI


def stdin_is_terminal() -> bool:
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (ValueError, OSError):
        return False


async def confirm(ui: UI, question: str) -> bool:
    """Ask on the terminal; only `y` or `yes` is a yes. Cancellable (Ctrl-C) while waiting."""
    ui.info.print(question, end="", markup=False)
    ui.info.file.flush()
    try:
        answer = await _read_line()
    except BaseException:  # Ctrl-C: end the prompt's line before anything else is printed
        ui.info.print()
        raise
    if answer is None:
        ui.info.print()
    return answer is not None and answer.strip().lower() in ("y", "yes")


async def _read_line() -> str | None:
    # A daemon thread reads, so a Ctrl-C (which cancels this task) never waits for the Enter key.
    done = threading.Event()
    box: list[str | None] = []

    def read() -> None:
        try:
            line: str | None = sys.stdin.readline() or None
        except (OSError, ValueError, UnicodeDecodeError):
            line = None
        box.append(line)
        done.set()

    threading.Thread(target=read, name="codex-limits-confirm", daemon=True).start()
    # Polled: waking an anyio.Event from a foreign thread needs an event-loop token (anyio >= 4.x only),
    # and a worker-thread wait would keep the interpreter from exiting after a Ctrl-C.
    while not done.is_set():  # noqa: ASYNC110
        await anyio.sleep(0.05)
    return box[0]
