"""The operator commands: status, apply, refresh, history, accounts and the demo.

Each command that needs the pool spawns `codex-limits serve` (with `--simulate` when asked),
talks to it through one `Client` connection and renders with `render`. The child's stderr goes
to a temporary file (shown only when the server fails) unless `CODEX_LIMITS_LOG` asks to see it.

Failures the operator can expect leave as `CommandFailed(exit code, one line)`; `run` prints that
line on stderr and turns it into the exit status, so no traceback reaches the terminal. The exit
codes are the `Exit` enum of `cli`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import anyio
import anyio.abc
import pydantic
from rich.console import Console, RenderableType
from rich.text import Text

from app_server.cli import render
from app_server.cli.exits import Exit
from app_server.rpc.client import Client, ServerClosed, spawn
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED, RATE_LIMITS_UPDATED
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

START_TIMEOUT: Final = 30.0
"""Seconds the spawned server has to answer `initialize`."""
REQUEST_TIMEOUT: Final = 120.0
"""Seconds any other request may take (the server bounds each upstream call well below this)."""
LOG_ENV: Final = "CODEX_LIMITS_LOG"


class CommandFailed(Exception):
    """An expected failure: `message` is the one line shown on stderr, `code` the exit status."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"CommandFailed(code={self.code!r}, message={self.message!r})"


@dataclass
class Interrupt:
    """What Ctrl-C means at the current step: the exit status and the line to print."""

    code: Exit = Exit.INTERRUPTED
    message: str = "interrupted"


@dataclass
class UI:
    """Where things go: `out` is stdout; in `--json` mode everything meant for a person goes to stderr."""

    as_json: bool = False
    out: Console = field(default_factory=lambda: _console(sys.stdout))
    err: Console = field(default_factory=lambda: _console(sys.stderr))

    @property
    def info(self) -> Console:
        return self.err if self.as_json else self.out

    def show(self, renderable: RenderableType | str) -> None:
        """Print for a person; a plain string is printed as is (no rich markup)."""
        self.info.print(Text(renderable) if isinstance(renderable, str) else renderable)

    def width(self) -> int:
        return self.info.width

    def emit_json(self, value: Any, *, compact: bool = False) -> None:
        """Machine output, written as is: never wrapped to the terminal's width."""
        text = (
            json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if compact
            else json.dumps(value, indent=2, ensure_ascii=False)
        )
        self.out.file.write(text + "\n")
        self.out.file.flush()


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would raise SystemExit(1) from inside the task group; `run` turns this into OUTPUT_CLOSED.
        raise BrokenPipeError(errno.EPIPE, "output closed")


def _console(file: IO[str]) -> Console:
    return _Console(file=file, highlight=False, soft_wrap=False)


def run(command: Callable[[], Awaitable[Exit]], interrupt: Interrupt) -> int:
    """Run one async command; expected failures become one stderr line and an exit status."""
    try:
        return int(anyio.run(command))
    except KeyboardInterrupt:
        return fail(CommandFailed(interrupt.code, interrupt.message))
    except CommandFailed as exc:
        return fail(exc)
    except BrokenPipeError:
        return fail(_output_closed())
    except BaseExceptionGroup as group:
        failure = _expected(group)
        if failure is None:
            raise
        return fail(failure)


def run_local(command: Callable[[], Exit]) -> int:
    """`run` for the commands that need no server (`accounts ...`)."""
    try:
        return int(command())
    except CommandFailed as exc:
        return fail(exc)
    except BrokenPipeError:
        return fail(_output_closed())


def fail(failure: CommandFailed) -> int:
    """Print the failure as one line on stderr (none for a closed stdout) and return its exit status."""
    if failure.message:
        _fail_line(failure.message)
    return int(failure.code)


def _fail_line(message: str) -> None:
    line = " ".join(message.split())
    sys.stderr.write(f"codex-limits: {line}\n")
    sys.stderr.flush()


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
    for leaf in leaves:
        if isinstance(leaf, ServerClosed | json.JSONDecodeError | UnicodeDecodeError | pydantic.ValidationError):
            return CommandFailed(Exit.SERVER, f"protocol failure: the server sent something unexpected ({leaf})")
    return None


# -- the server connection -------------------------------------------------------------------


class Server:
    """One initialized connection to a spawned `codex-limits serve`."""

    def __init__(self, client: Client, process: anyio.abc.Process, log: IO[bytes] | None) -> None:
        self.client = client
        self.process = process
        self._log = log

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                return await self.client.request(method, params)
        except TimeoutError:
            raise CommandFailed(
                Exit.SERVER, f"the server did not answer {method} within {REQUEST_TIMEOUT:g} s"
            ) from None
        except ServerClosed:
            reason = await self.exit_reason(f"the server stopped before answering {method}")
            raise CommandFailed(Exit.SERVER, reason) from None

    async def exit_reason(self, what: str) -> str:
        """`what`, plus the server's exit status and the last line it logged, when there is one."""
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


def server_args(simulate: bool) -> list[str]:
    args = ["--log-level", os.environ.get(LOG_ENV) or "WARNING"]
    return [*args, "--simulate"] if simulate else args


@asynccontextmanager
async def connect(simulate: bool, *, command: list[str] | None = None) -> AsyncIterator[Server]:
    """Spawn the server, initialize, and yield it; the failure of the body is re-raised as is.
    The running service of the data directory is used instead when there is one (not with `simulate`)."""
    failure: Exception | None = None
    if not simulate and command is None:
        from app_server.cli.session import attach

        async with attach() as attached:
            if attached is not None:
                try:
                    server = Server(*attached, None)
                    await _initialize(server)
                    yield server
                except Exception as exc:
                    failure = exc
        if failure is not None:
            raise failure
        if attached is not None:
            return
    with contextlib.ExitStack() as stack:
        log: IO[bytes] | None = None
        if not os.environ.get(LOG_ENV):
            log = stack.enter_context(tempfile.TemporaryFile(prefix="codex-limits-server-", suffix=".log"))
        try:
            context = spawn(server_args(simulate), stderr=log, command=command)
            async with context as (client, process):
                server = Server(client, process, log)
                try:
                    await _initialize(server)
                    yield server
                except Exception as exc:
                    failure = exc
        except OSError as exc:
            raise CommandFailed(Exit.SERVER, f"could not start the server: {exc}") from None
    if failure is not None:
        raise failure


async def _initialize(server: Server) -> None:
    try:
        with anyio.fail_after(START_TIMEOUT):
            # The CLI reads answers only: the per-account notifications would just queue up.
            await server.client.initialize(opt_out=[POOL_ACCOUNT_UPDATED.name, RATE_LIMITS_UPDATED.name])
    except TimeoutError:
        raise CommandFailed(
            Exit.SERVER, await server.exit_reason(f"the server did not start within {START_TIMEOUT:g} s")
        ) from None
    except ServerClosed:
        raise CommandFailed(Exit.SERVER, await server.exit_reason("the server could not start")) from None
    except RpcError as exc:
        raise CommandFailed(Exit.SERVER, f"the server refused to initialize: {exc.message}") from None


def rpc_failure(exc: RpcError, *, invalid: Exit = Exit.USAGE) -> CommandFailed:
    """An error answer as an exit status: refusals 3, invalid requests `invalid`, upstream failures 4."""
    if exc.code == INVALID_REQUEST:
        refused = isinstance(exc.data, dict) and "disabledReason" in exc.data
        return CommandFailed(Exit.REFUSED if refused else invalid, exc.message)
    if exc.code == INTERNAL_ERROR:
        return CommandFailed(Exit.UPSTREAM, exc.message)
    return CommandFailed(Exit.SERVER, f"the server answered error {exc.code}: {exc.message}")


def _summaries(raw: list[dict[str, Any]]) -> list[ext.AccountSummary]:
    return [ext.AccountSummary.model_validate(item) for item in raw]


# -- status ----------------------------------------------------------------------------------


async def status(ui: UI, *, simulate: bool, watch: float | None) -> Exit:
    async with connect(simulate) as server:
        if watch is None:
            raw = await _list(server, None)
            if ui.as_json:
                ui.emit_json(raw)
            else:
                ui.show(render.status_table(_summaries(raw), now=time.time(), width=ui.width()))
            return Exit.OK
        await _watch(server, ui, watch)
    return Exit.OK


async def _list(server: Server, max_age: int | None) -> list[dict[str, Any]]:
    try:
        return await server.accounts(max_age)
    except RpcError as exc:
        raise rpc_failure(exc) from None


async def _watch(server: Server, ui: UI, interval: float) -> None:
    """Re-list every `interval` seconds until Ctrl-C; summaries younger than the interval are reused."""
    max_age: int | None = None
    if ui.as_json:
        while True:
            raw = await _list(server, max_age)
            ui.emit_json(raw, compact=True)
            max_age = int(interval)
            await anyio.sleep(interval)
    console = ui.out
    if not console.is_terminal:
        while True:
            raw = await _list(server, max_age)
            console.rule(time.strftime("%H:%M:%S"), align="left")
            console.print(render.status_table(_summaries(raw), now=time.time(), width=console.width))
            max_age = int(interval)
            await anyio.sleep(interval)
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    hint = Text(f"every {interval:g} s · Ctrl-C to stop", style="dim")
    with Live(console=console, auto_refresh=False, vertical_overflow="visible") as live:
        while True:
            raw = await _list(server, max_age)
            table = render.status_table(_summaries(raw), now=time.time(), width=console.width)
            live.update(Group(table, hint), refresh=True)
            max_age = int(interval)
            await anyio.sleep(interval)


# -- refresh and history ---------------------------------------------------------------------


async def refresh(ui: UI, *, account: str, simulate: bool) -> Exit:
    async with connect(simulate) as server:
        try:
            raw = await server.refresh(account)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    summary = ext.AccountSummary.model_validate(raw)
    if ui.as_json:
        ui.emit_json(raw)
    else:
        ui.show(render.account_detail(summary, now=time.time(), width=ui.width()))
    if summary.error is not None:
        raise CommandFailed(Exit.UPSTREAM, f"{account}: {summary.error.message}")
    return Exit.OK


async def history(ui: UI, *, account: str | None, limit: int | None, simulate: bool) -> Exit:
    async with connect(simulate) as server:
        try:
            raw = await server.history(account, limit)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    if ui.as_json:
        ui.emit_json(raw)
        return Exit.OK
    entries = [ext.ApplyRecord.model_validate(item) for item in raw]
    ui.show(render.history_table(entries, now=time.time(), width=ui.width()))
    return Exit.OK


# -- apply -----------------------------------------------------------------------------------


async def apply(
    ui: UI, interrupt: Interrupt, *, account: str, credit_id: str | None, yes: bool, simulate: bool
) -> Exit:
    async with connect(simulate) as server:
        return await apply_on(server, ui, interrupt, account=account, credit_id=credit_id, yes=yes)


async def apply_on(
    server: Server, ui: UI, interrupt: Interrupt, *, account: str, credit_id: str | None, yes: bool
) -> Exit:
    """Show the account, confirm, apply once with an idempotency key, show what changed."""
    interrupt.code, interrupt.message = Exit.REFUSED, "cancelled; nothing was spent"
    try:
        summary = ext.AccountSummary.model_validate(await server.refresh(account))
    except RpcError as exc:
        raise rpc_failure(exc) from None
    ui.show(render.account_detail(summary, now=time.time(), width=ui.width()))
    pending = summary.pending_apply
    if pending is not None:
        key, chosen = pending.idempotency_key, pending.credit_id
        ui.show(
            Text(
                f"An earlier apply on {account} (started {render.stamp(pending.started_at)}) never reported its "
                f"outcome. Re-sending that same attempt (key {key}): if it went through, nothing more is spent.",
                style="yellow",
            )
        )
        if credit_id is not None and credit_id != chosen:
            ui.show(Text(f"Ignoring --credit {credit_id}: the earlier attempt is re-sent exactly as it was."))
    else:
        key, chosen = str(uuid.uuid4()), credit_id
        if not summary.reset_action.enabled and not yes:
            words = render.reason_words(summary.reset_action.disabled_reason, long=True)
            raise CommandFailed(Exit.REFUSED, f"cannot apply on {account}: {words}; nothing was spent")
    warning = summary.reset_action.warning
    ui.show("")
    if not yes:
        if not _stdin_is_terminal():
            raise CommandFailed(
                Exit.REFUSED,
                "not applying: standard input is not a terminal, so nobody can confirm; "
                "pass --yes to apply without asking (nothing was spent)",
            )
        ui.show(Text("⚠ " + warning, style="bold yellow"))
        if not await confirm(ui, f"Apply a saved reset on {account} now? [y/N] "):
            raise CommandFailed(Exit.REFUSED, "not applied; nothing was spent")
    elif summary.reset_action.enabled or pending is not None:
        ui.show(Text.assemble(("⚠ " + warning, "yellow"), " (--yes given: not asking)"))
    else:
        ui.show("--yes given: sending it anyway; the server checks again and spends nothing if it still cannot apply.")
    interrupt.code = Exit.INTERRUPTED
    interrupt.message = (
        f"interrupted while the apply on {account} was in flight: its outcome is unknown here; "
        f"see `codex-limits history {account}` before trying again"
    )
    try:
        raw = await server.apply(account, key, chosen)
    except RpcError as exc:
        failure = rpc_failure(exc, invalid=Exit.REFUSED)
        if failure.code == Exit.REFUSED:
            failure.message += "; nothing was spent"
        elif failure.code == Exit.UPSTREAM:
            failure.message += await _pending_hint(server, account, key)
        raise failure from None
    except CommandFailed as failure:  # no answer at all
        failure.message += (
            f"; the apply's outcome is unknown here: see `codex-limits history {account}`, and run "
            f"`codex-limits apply {account}` again to re-send the same attempt if it is still pending"
        )
        raise
    interrupt.code, interrupt.message = Exit.INTERRUPTED, "interrupted"
    response = ext.AccountPoolApplyResponse.model_validate(raw)
    ui.show("")
    ui.show(render.apply_result(response, now=time.time(), width=ui.width()))
    if ui.as_json:
        ui.emit_json(raw)
    return Exit.OK if response.outcome in (Outcome.RESET, Outcome.ALREADY_REDEEMED) else Exit.REFUSED


async def _pending_hint(server: Server, account: str, key: str) -> str:
    """After a failed apply: whether the attempt stayed pending (outcome unknown) and what to do."""
    with contextlib.suppress(Exception):
        summary = ext.AccountSummary.model_validate(await server.refresh(account))
        if summary.pending_apply is not None and summary.pending_apply.idempotency_key == key:
            return (
                f" — the attempt is recorded as pending: run `codex-limits apply {account}` again to re-send it "
                "with the same key (it cannot spend twice)"
            )
        return " — nothing was spent"
    return ""


def _stdin_is_terminal() -> bool:
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
        except (OSError, ValueError):
            line = None
        box.append(line)
        done.set()

    threading.Thread(target=read, name="codex-limits-confirm", daemon=True).start()
    # Polled: waking an anyio.Event from a foreign thread needs an event-loop token (anyio >= 4.x only),
    # and a worker-thread wait would keep the interpreter from exiting after a Ctrl-C.
    while not done.is_set():  # noqa: ASYNC110
        await anyio.sleep(0.05)
    return box[0]


# -- accounts.toml ---------------------------------------------------------------------------


def _accounts_file() -> Any:
    from app_server.config import Settings
    from app_server.pool.accounts import FILE_NAME, AccountsFile

    settings = Settings.from_env()
    return AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)


def accounts_list(ui: UI) -> Exit:
    from app_server.pool.accounts import AccountsFileError

    pool = _accounts_file()
    try:
        entries = pool.entries()
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, str(exc)) from None
    rows = [render.AccountRow(e.id, e.label, e.codex_home, (e.codex_home / "auth.json").is_file()) for e in entries]
    if ui.as_json:
        ui.emit_json(
            [{"id": r.id, "label": r.label, "codexHome": str(r.codex_home), "authJson": r.signed_in} for r in rows]
        )
        return Exit.OK
    ui.show(render.accounts_table(rows, width=ui.width()))
    where = pool.path if pool.path.exists() else f"{pool.path} (not created yet: the pool is just $CODEX_HOME)"
    ui.show(Text(f"pool file: {where}", style="dim"))
    return Exit.OK


def accounts_add(ui: UI, *, account: str, codex_home: str, label: str | None) -> Exit:
    from app_server.pool.accounts import AccountsFileError

    pool = _accounts_file()
    home = Path(codex_home).expanduser().absolute()
    try:
        entry = pool.add(account, home, label)
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, str(exc)) from None
    ui.show(f"Added account {entry.id!r} ({entry.label}) with CODEX_HOME {entry.codex_home} to {pool.path}.")
    if not (entry.codex_home / "auth.json").is_file():
        ui.err.print(
            Text.assemble(
                ("note: ", "yellow"),
                f"{entry.codex_home} has no auth.json yet: sign in with `CODEX_HOME={entry.codex_home} codex login`.",
            )
        )
    return Exit.OK


def accounts_remove(ui: UI, *, account: str) -> Exit:
    from app_server.pool.accounts import AccountsFileError

    pool = _accounts_file()
    try:
        pool.remove(account)
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, str(exc)) from None
    ui.show(f"Removed account {account!r} from {pool.path} (its CODEX_HOME and sign-in are left as they are).")
    return Exit.OK


# -- demo ------------------------------------------------------------------------------------


async def demo(ui: UI, interrupt: Interrupt) -> Exit:
    """The whole story against a simulated upstream, through one connection so its state carries over."""
    say = _narrator(ui)
    say(
        "codex-limits demo: a simulated upstream on 127.0.0.1 with three made-up accounts. "
        "Nothing here touches a real account or the network.",
        step=None,
    )
    async with connect(True) as server:
        raw = await _list(server, None)
        pool = {s.account_id: s for s in _summaries(raw)}
        say("The pool. `codex-limits status` reads every account's usage and saved resets:", step=1)
        ui.show(render.status_table(list(pool.values()), now=time.time(), width=ui.width()))

        alice = pool["alice"]
        say(
            f"{alice.label} is {render.STATUS_TEXT[alice.status][0]} with "
            f"{_count(render.saved_count(alice), 'saved reset')}. `codex-limits apply alice` spends one; "
            "it always asks first (the demo answers yes for you, like --yes):",
            step=2,
        )
        await apply_on(server, ui, interrupt, account="alice", credit_id=None, yes=True)

        raw = await _list(server, None)
        pool = {s.account_id: s for s in _summaries(raw)}
        alice = pool["alice"]
        say(
            f"The pool again, through the same server: {alice.label} is now {render.STATUS_TEXT[alice.status][0]} "
            f"and has {_count(render.saved_count(alice), 'saved reset')} left:",
            step=3,
        )
        ui.show(render.status_table(list(pool.values()), now=time.time(), width=ui.width()))

        say(
            f"{pool['bob'].label} has no saved reset. Applying anyway is refused by the server before anything "
            "is spent:",
            step=4,
        )
        try:
            await apply_on(server, ui, interrupt, account="bob", credit_id=None, yes=True)
        except CommandFailed as refused:
            ui.show(Text.assemble((f"✗ refused (exit status {int(refused.code)}): ", "yellow"), refused.message))

        carol = pool["carol"]
        say(
            f"{carol.label}'s saved sign-in has expired: nothing can be read or applied until she signs in "
            "again with `codex login`. `codex-limits refresh carol` shows it:",
            step=5,
        )
        carol = ext.AccountSummary.model_validate(await server.refresh("carol"))
        ui.show(render.account_detail(carol, now=time.time(), width=ui.width()))

        say(
            "Every apply is recorded in a ledger before it is sent, so an interrupted one is re-sent with its own "
            "key instead of spending twice. `codex-limits history` shows it:",
            step=6,
        )
        entries = [ext.ApplyRecord.model_validate(e) for e in await server.history(None, None)]
        ui.show(render.history_table(entries, now=time.time(), width=ui.width()))
    say(
        "That was all simulated. With your own accounts: `codex-limits accounts add work ~/.codex-work`, "
        "then `codex-limits status` and `codex-limits apply work`.",
        step=None,
    )
    return Exit.OK


def _narrator(ui: UI) -> Callable[..., None]:
    def say(text: str, *, step: int | None) -> None:
        ui.show("")
        ui.show(Text.assemble((f"Step {step} · " if step is not None else "» ", "bold cyan"), text))

    return say


def _count(n: int | None, noun: str) -> str:
    if n is None:
        return f"an unknown number of {noun}s"
    return f"{n} {noun}{'' if n == 1 else 's'}"
