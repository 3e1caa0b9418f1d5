"""What every operator command shares: the terminal (`UI`), expected failures, and the server connection.

Each command that needs the pool spawns `codex-limits serve` (with `--simulate` when asked) and
talks to it through one `Client` connection (`connect`). The child's stderr goes to a temporary
file (its last line is shown only when the server fails) unless a log level was asked for.

Failures the operator can expect leave as `CommandFailed(exit code, one line)`; `run` prints that
line on stderr and turns it into the exit status, so no traceback reaches the terminal. A
terminal that cannot show UTF-8 gets the same output in ASCII (`_AsciiSafe`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final

import anyio
import anyio.abc
import pydantic
from rich.console import Console, RenderableType
from rich.text import Text

from app_server.cli.exits import Exit
from app_server.config import LOG_ENV, log_level
from app_server.rpc.client import Client, ServerClosed, spawn
from app_server.rpc.wsframe import ProtocolError
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED, RATE_LIMITS_UPDATED

START_TIMEOUT: Final = 30.0
"""Seconds the spawned server has to answer `initialize`."""
REQUEST_TIMEOUT: Final = 120.0
"""Seconds any other request may take (the server bounds each upstream call well below this)."""
SIMULATED: Final = "<simulated>"
"""Shown instead of the simulated world's temporary directory, which is gone when the command ends."""


@dataclass
class Options:
    """Process-wide choices made on the command line (set once by `main`)."""

    log_level: str | None = None


OPTIONS = Options()


class CommandFailed(Exception):
    """An expected failure: `message` is the one line shown on stderr, `code` the exit status.

    `payload`, when set, is the JSON object `--json` prints on stdout for this failure."""

    def __init__(self, code: Exit, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.payload = payload

    def __repr__(self) -> str:
        return f"CommandFailed(code={self.code!r}, message={self.message!r})"


@dataclass
class Interrupt:
    """What Ctrl-C means at the current step: the exit status and the line to print."""

    code: Exit = Exit.INTERRUPTED
    message: str = "interrupted"


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


# -- running a command -----------------------------------------------------------------------


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
        return fail(failure if failure is not None else _bug(group), ui)
    except Exception as exc:
        return fail(_bug(exc), ui)


def _bug(exc: BaseException) -> CommandFailed:
    """An unexpected error: one line and exit 5, the traceback only when asked for with -v."""
    import logging
    import traceback

    if OPTIONS.log_level in ("DEBUG", "INFO"):
        traceback.print_exception(exc)
    logging.getLogger(__name__).debug("unexpected error", exc_info=exc)
    return CommandFailed(
        Exit.SERVER,
        f"internal error: {type(exc).__name__}: {exc} (a bug in codex-limits; run with -v for the traceback)",
    )


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
        return fail(_bug(exc), ui)


def fail(failure: CommandFailed, ui: UI | None = None) -> int:
    """Print the failure as one line on stderr (none for a closed stdout) and return its exit status.

    With `--json`, a failure that has a payload also prints it on stdout, so a script always gets JSON."""
    if failure.payload is not None and ui is not None and ui.as_json:
        with contextlib.suppress(OSError):
            ui.emit_json(failure.payload)
    if failure.message:
        fail_line(failure.message)
    return int(failure.code)


def fail_line(message: str) -> None:
    line = " ".join(message.split())
    err = safe_stream(sys.stderr)
    with contextlib.suppress(OSError):
        err.write(f"codex-limits: {line}\n")
        err.flush()


def _output_closed() -> CommandFailed:
    """Whoever read stdout stopped (`... | head`): say nothing more, and keep the final flush from failing."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return CommandFailed(Exit.OUTPUT_CLOSED, "")


def _expected(group: BaseExceptionGroup[BaseException]) -> CommandFailed | None:
    """The expected failure inside a task-group error, or None when it holds a real bug."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, CommandFailed):
            return leaf
        if isinstance(leaf, BrokenPipeError):
            return _output_closed()
        if isinstance(leaf, KeyboardInterrupt):
            return CommandFailed(Exit.INTERRUPTED, "interrupted")
    for leaf in leaves:
        if isinstance(leaf, ServerClosed):
            return CommandFailed(Exit.SERVER, f"the server stopped: {leaf}")
        if isinstance(leaf, ProtocolError | json.JSONDecodeError | UnicodeDecodeError | pydantic.ValidationError):
            return CommandFailed(Exit.SERVER, f"protocol failure: the server sent something unexpected ({leaf})")
    return None


# -- the server connection -------------------------------------------------------------------


class Server:
    """One initialized connection to a spawned `codex-limits serve`."""

    def __init__(self, client: Client, process: anyio.abc.Process | None, log: IO[bytes] | None) -> None:
        self.client = client
        self.process = process
        self._log = log
        self.sandbox: str | None = None
        """With `--simulate`: the simulated world's temporary directory, shown as `SIMULATED`."""

    @property
    def name(self) -> str:
        """How the operator knows this server: the running service (with its pid), or the spawned one."""
        from app_server.cli.attach import ServiceProcess

        if isinstance(self.process, ServiceProcess):
            return f"the codex-limits service (pid {self.process.pid})"
        return "the server"

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The answer's result; no answer (timeout, connection lost) is `CommandFailed(Exit.SERVER)`."""
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                return self.scrub(await self.client.request(method, params))
        except TimeoutError:
            raise CommandFailed(
                Exit.SERVER, f"{self.name} did not answer {method} within {REQUEST_TIMEOUT:g} s"
            ) from None
        except ServerClosed:
            why = f" ({self.client.lost_reason})" if self.client.lost_reason else ""
            reason = await self.exit_reason(f"{self.name} stopped before answering {method}{why}")
            raise CommandFailed(Exit.SERVER, reason) from None
        except RpcError as exc:
            raise RpcError(exc.code, self.scrub(exc.message), self.scrub(exc.data)) from None

    def scrub(self, value: Any) -> Any:
        """`value` with the simulated world's temporary paths replaced by `SIMULATED` (they will be gone)."""
        if self.sandbox is None:
            return value
        if isinstance(value, str):
            return value.replace(self.sandbox, SIMULATED)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def abandon(self) -> None:
        """Stop a spawned server now: reads still in flight are not worth waiting for."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def exit_reason(self, what: str) -> str:
        """`what`, plus the server's exit status and the last line it logged, when there is one."""
        if self.process is None:
            return what
        with anyio.move_on_after(2):
            await self.process.wait()
        parts = [what]
        if self.process.returncode is not None:
            parts.append(f"(exit status {self.process.returncode})")
        tail = self.log_tail()
        if tail:
            parts.append(f"— {tail}")
        return " ".join(parts)

    def log_tail(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            self._log.seek(0)
            lines = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    async def accounts(self, max_age: int | None = None) -> list[dict[str, Any]]:
        params = {"maxAgeSeconds": max_age} if max_age is not None else None
        result = await self.request("accountPool/list", params)
        accounts: list[dict[str, Any]] = result["accounts"]
        return accounts

    async def refresh(self, account_id: str) -> dict[str, Any]:
        summary: dict[str, Any] = await self.request("accountPool/refresh", {"accountId": account_id})
        return summary

    async def apply(self, account_id: str, key: str, credit_id: str | None) -> dict[str, Any]:
        params = {"accountId": account_id, "idempotencyKey": key, "creditId": credit_id}
        response: dict[str, Any] = await self.request("accountPool/resetCredit/apply", params)
        return response

    async def history(self, account_id: str | None, limit: int | None) -> list[dict[str, Any]]:
        result = await self.request("accountPool/history", {"accountId": account_id, "limit": limit})
        entries: list[dict[str, Any]] = result["entries"]
        return entries


def never_signed_in(summaries: list[Any], *, simulated: bool) -> set[str]:
    """Ids of accounts needing sign-in whose Codex home has no auth.json at all (never signed in there)."""
    from pathlib import Path

    if simulated:
        return set()
    return {
        s.account_id
        for s in summaries
        if str(getattr(s, "status", "")) == "reauthRequired"
        and s.codex_home
        and not (Path(s.codex_home) / "auth.json").exists()
    }


def server_args(simulate: bool) -> list[str]:
    args = ["--log-level", log_level(given=OPTIONS.log_level)]
    return [*args, "--simulate"] if simulate else args


@asynccontextmanager
async def connect(simulate: bool, *, command: list[str] | None = None, updates: bool = False) -> AsyncIterator[Server]:
    """Spawn the server, initialize, and yield it; the failure of the body is re-raised as is.

    `updates`: keep the per-account `accountPool/accountUpdated` notifications (progress display).
    The running service of the data directory is used instead when there is one (not with `simulate`)."""
    failure: Exception | None = None
    if not simulate and command is None:
        from app_server.cli.attach import NotAnswering, attach

        try:
            async with attach() as attached:
                if attached is not None:
                    try:
                        server = Server(attached[0], attached[1], None)
                        await _initialize(server, updates=updates)
                        yield server
                    except Exception as exc:
                        failure = exc
        except NotAnswering as exc:
            raise CommandFailed(Exit.SERVER, str(exc)) from None
        if failure is not None:
            raise failure
        if attached is not None:
            return
    with contextlib.ExitStack() as stack:
        log: IO[bytes] | None = None
        if not (OPTIONS.log_level or os.environ.get(LOG_ENV)):  # nobody asked for the server's log
            log = stack.enter_context(tempfile.TemporaryFile(prefix="codex-limits-server-", suffix=".log"))
        try:
            context = spawn(server_args(simulate), stderr=log, command=command)
            async with context as (client, process):
                server = Server(client, process, log)
                try:
                    home = await _initialize(server, updates=updates)
                    if simulate:
                        server.sandbox = _sandbox_root(home)
                    yield server
                except Exception as exc:
                    failure = exc
        except OSError as exc:
            raise CommandFailed(Exit.SERVER, f"could not start the server: {exc}") from None
    if failure is not None:
        raise failure


def _sandbox_root(codex_home: str | None) -> str | None:
    """The simulated world's directory: its Codex homes are `<root>/homes/<id>`."""
    if not codex_home:
        return None
    match = re.match(r"^(.*)/homes/[^/]+/?$", codex_home)
    return match.group(1) if match else None


async def _initialize(server: Server, *, updates: bool) -> str | None:
    opt_out = [RATE_LIMITS_UPDATED.name] if updates else [POOL_ACCOUNT_UPDATED.name, RATE_LIMITS_UPDATED.name]
    try:
        with anyio.fail_after(START_TIMEOUT):
            # The CLI reads answers only, except for progress: other notifications would just queue up.
            result = await server.client.initialize(opt_out=opt_out)
    except TimeoutError:
        raise CommandFailed(
            Exit.SERVER,
            await server.exit_reason(
                f"the server did not start within {START_TIMEOUT:g} s"
                if server.name == "the server"
                else f"{server.name} did not answer initialize within {START_TIMEOUT:g} s"
            ),
        ) from None
    except ServerClosed:
        what = (
            "the server could not start" if server.name == "the server" else f"{server.name} stopped before initialize"
        )
        raise CommandFailed(Exit.SERVER, await server.exit_reason(what)) from None
    except RpcError as exc:
        raise CommandFailed(Exit.SERVER, f"the server refused to initialize: {exc.message}") from None
    home = result.get("codexHome") if isinstance(result, dict) else None
    return home if isinstance(home, str) else None


def rpc_failure(exc: RpcError, *, invalid: Exit = Exit.USAGE) -> CommandFailed:
    """An error answer as an exit status: refusals 3, invalid requests `invalid`, upstream failures 4."""
    payload = {"error": {"code": exc.code, "message": exc.message, "data": exc.data}}
    if exc.code == INVALID_REQUEST:
        refused = isinstance(exc.data, dict) and "disabledReason" in exc.data
        return CommandFailed(Exit.REFUSED if refused else invalid, exc.message, payload)
    if exc.code == INTERNAL_ERROR:
        return CommandFailed(Exit.UPSTREAM, exc.message, payload)
    return CommandFailed(Exit.SERVER, f"the server answered error {exc.code}: {exc.message}", payload)
