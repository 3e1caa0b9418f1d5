"""Expected failures and exit statuses: `CommandFailed`, and `run`, which turns any outcome into one.

Failures the operator can expect leave as `CommandFailed(exit code, one line)`; `run` prints that line on
stderr and turns it into the exit status, so no traceback reaches the terminal (an unexpected error is one
line and exit 5, its traceback only with -v).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pydantic

from app_server.cli.exits import CommandFailed, Exit, failure_of, internal_error, protocol_failure
from app_server.cli.streams import fail_line, quiet_stdout
from app_server.cli.terminal import UI
from app_server.rpc.client import ServerClosed
from app_server.rpc.wsframe import ProtocolError
from protocol.jsonrpc import RpcError


@dataclass
class Interrupt:
    """What Ctrl-C means at the current step: the exit status and the line to print."""

    code: Exit = Exit.INTERRUPTED
    message: str = "interrupted"


def run(command: Callable[[], Awaitable[Exit]], interrupt: Interrupt, ui: UI | None = None) -> int:
    """Run one async command; expected failures become one stderr line and an exit status."""
    try:
        return int(anyio.run(command))
    except KeyboardInterrupt:
        return fail(CommandFailed(interrupt.code, interrupt.message), ui)
    except CommandFailed as exc:
        return fail(exc, ui)
    except BrokenPipeError:
        return fail(_output_closed(), ui)
    except BaseExceptionGroup as group:
        failure = _expected(group)
        return fail(failure if failure is not None else _bug(group, ui), ui)
    except Exception as exc:
        return fail(_bug(exc, ui), ui)


def _bug(exc: BaseException, ui: UI | None) -> CommandFailed:
    """An unexpected error: one line and exit 5, the traceback only when asked for with -v."""
    import logging
    import traceback

    if ui is not None and ui.log_level in ("DEBUG", "INFO"):
        traceback.print_exception(exc)
    logging.getLogger(__name__).debug("unexpected error", exc_info=exc)
    return internal_error(exc)


def run_local(command: Callable[[], Exit], ui: UI | None = None) -> int:
    """`run` for the commands that need no server (`accounts ...`)."""
    try:
        return int(command())
    except KeyboardInterrupt:
        return fail(CommandFailed(Exit.INTERRUPTED, "interrupted"), ui)
    except CommandFailed as exc:
        return fail(exc, ui)
    except BrokenPipeError:
        return fail(_output_closed(), ui)
    except Exception as exc:
        return fail(_bug(exc, ui), ui)


def fail(failure: CommandFailed, ui: UI | None = None) -> int:
    """Print the failure as one line on stderr (none for a closed stdout) and return its exit status.

    With `--json`, a failure that has a payload also prints it on stdout, so a script always gets JSON."""
    if failure.payload is not None and ui is not None and ui.as_json:
        with contextlib.suppress(OSError):
            ui.emit_json(failure.payload)
    if failure.message:
        fail_line(failure.message)
    return int(failure.code)


def _output_closed() -> CommandFailed:
    """Whoever read stdout stopped (`... | head`): say nothing more, and keep the final flush from failing."""
    quiet_stdout()
    return CommandFailed(Exit.OUTPUT_CLOSED, "")


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside `group` and the groups nested in it, in order."""
    found: list[BaseException] = []
    for inner in group.exceptions:
        found.extend(leaves(inner) if isinstance(inner, BaseExceptionGroup) else [inner])
    return found


def _expected(group: BaseExceptionGroup[BaseException]) -> CommandFailed | None:
    """The expected failure inside a task-group error, or None when it holds a real bug."""
    found = leaves(group)
    for leaf in found:
        if isinstance(leaf, CommandFailed):
            return leaf
        if isinstance(leaf, BrokenPipeError):
            return _output_closed()
        if isinstance(leaf, KeyboardInterrupt):
            return CommandFailed(Exit.INTERRUPTED, "interrupted")
    for leaf in found:
        if isinstance(leaf, ServerClosed):
            return CommandFailed(Exit.SERVER, f"the server stopped: {leaf}")
        if isinstance(leaf, ProtocolError | json.JSONDecodeError | UnicodeDecodeError | pydantic.ValidationError):
            return protocol_failure(leaf)
    return None


def rpc_failure(exc: RpcError, *, invalid: Exit = Exit.USAGE) -> CommandFailed:
    """An error answer as an exit status: refusals 3, invalid requests `invalid`, upstream failures 4."""
    return failure_of(exc.code, exc.message, exc.data, invalid=invalid)
