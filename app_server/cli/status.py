"""`codex-limits status`: the pool at a glance, as it is read (progress), as a status line, as a quota gate, or watched.

Progress: one `accountPool/list` request, whose server reads every account concurrently and pushes an
`accountPool/accountUpdated` notification as each one finishes. The rows fill in from those
notifications, so one stalled account holds back only its own row; the list's answer, when it comes,
is the authoritative table (order, and accounts the local accounts.toml did not know). The ids to
show spinners for come from the local accounts.toml (the same file the server reads); with
`--simulate` they are learnt as rows arrive. One list request rather than one `accountPool/refresh`
per account keeps `maxAgeSeconds` caching (a running service answers `--compact` and `--watch` from
its cache) and the server's own concurrency limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio
from rich.console import Group, RenderableType
from rich.text import Text

from app_server.cli import render
from app_server.cli.connection import Server, connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.plain.status import compact_line, with_readiness
from app_server.cli.plain.words import never_signed_in
from app_server.cli.quick import COMPACT_MAX_AGE, gate, show_status
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED

MAX_BACKOFF: Final = 300.0
"""After errors, `--watch` waits twice as long each tick, up to this many seconds."""


def summaries(raw: Sequence[dict[str, Any]]) -> list[ext.AccountSummary]:
    return [render.Summary.model_validate(item) for item in raw]


def _timed_out(account_id: str, seconds: float) -> dict[str, Any]:
    """A summary for an account that did not answer within `--timeout` (JSON output keeps one entry per account)."""
    return {
        "accountId": account_id,
        "label": account_id,
        "codexHome": "",
        "email": None,
        "planType": None,
        "status": ext.AccountStatus.UNAVAILABLE.value,
        "rateLimits": None,
        "rateLimitsByLimitId": None,
        "resetCredits": None,
        "resetAction": {
            "enabled": False,
            "disabledReason": ext.ResetDisabledReason.UNAVAILABLE.value,
            "warning": ext.APPLY_WARNING,
            "readiness": None,
        },
        "pendingApply": None,
        "refreshedAt": None,
        "error": {"code": INTERNAL_ERROR, "message": f"no answer within {seconds:g} s (--timeout)"},
    }


def expected_ids() -> list[str]:
    """The pool's ids from the local accounts.toml, for the spinners; empty when it cannot be read."""
    try:
        from app_server.config import Settings
        from app_server.pool.accounts import FILE_NAME, AccountsFile

        settings = Settings.from_env()
        return [e.id for e in AccountsFile(settings.data_home / FILE_NAME, settings.codex_home).entries()]
    except Exception:  # the server reads the same file and reports what is wrong with it
        return []


class Reading:
    """One pool read in progress: rows by id as they arrive, then the list's answer."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.order: list[str] = list(ids)
        self.raw: dict[str, dict[str, Any]] = {}
        self.final: list[dict[str, Any]] | None = None
        self.timed_out: float | None = None

    def arrived(self, summary: dict[str, Any]) -> None:
        account_id = summary.get("accountId")
        if not isinstance(account_id, str):
            return
        if account_id not in self.order:
            self.order.append(account_id)
        self.raw[account_id] = summary

    def rows(self) -> list[render.Row]:
        if self.final is not None:
            return list(summaries(self.final))
        return [
            render.Summary.model_validate(self.raw[i]) if i in self.raw else render.Waiting(i, self.timed_out)
            for i in self.order
        ]

    def result(self) -> list[dict[str, Any]]:
        """Every account's summary; those that did not answer in time as `unavailable`."""
        if self.final is not None:
            return [with_readiness(r) for r in self.final]
        seconds = self.timed_out or 0.0
        return [with_readiness(self.raw.get(i) or _timed_out(i, seconds)) for i in self.order]


async def read_pool(
    server: Server,
    *,
    max_age: int | None,
    timeout: float | None,
    ids: Sequence[str] = (),
    changed: Callable[[Reading], None] | None = None,
    abandon: bool = True,
) -> Reading:
    """List the pool; rows arrive through notifications; after `timeout` seconds stop waiting for the rest."""
    reading = Reading(ids)

    async def listen() -> None:
        async for message in server.client.notifications:
            if message.get("method") != POOL_ACCOUNT_UPDATED.name:
                continue
            account = (message.get("params") or {}).get("account")
            if isinstance(account, dict):
                reading.arrived(server.scrub(account))
                if changed is not None:
                    changed(reading)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
            try:
                reading.final = await server.accounts(max_age)
            except RpcError as exc:
                raise rpc_failure(exc) from None
        tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        reading.timed_out = timeout
        if abandon:
            server.abandon()  # only reads are in flight: nothing is lost by not waiting for them
    if changed is not None:
        changed(reading)
    return reading


# -- the command -----------------------------------------------------------------------------


async def status(
    ui: UI,
    *,
    simulate: bool,
    watch: float | None = None,
    timeout: float | None = None,
    compact: bool = False,
    fail_above: float | None = None,
) -> Exit:
    live = watch is None and not compact and not ui.as_json and ui.out.is_terminal
    async with connect(simulate, log_level=ui.log_level, updates=True) as server:
        if watch is not None:
            await _watch(server, ui, watch, timeout=timeout, compact=compact, simulated=simulate)
            return Exit.OK
        max_age = COMPACT_MAX_AGE if compact else None
        ids = [] if simulate else expected_ids()
        if live:
            reading = await _read_live(server, ui, max_age=max_age, timeout=timeout, ids=ids, simulated=simulate)
        else:
            reading = await read_pool(server, max_age=max_age, timeout=timeout, ids=ids)
        ahead = None if compact or reading.timed_out is not None else await forecasts(server)
    raw = reading.result()
    if ui.as_json or compact or not ui.out.is_terminal:  # what a running service's `quick` path prints
        show_status(ui.out.file, raw, ahead, as_json=ui.as_json, compact=compact, simulated=simulate)
    else:
        unsigned = never_signed_in(raw, simulated=simulate)
        ui.show(
            render.status_table(
                reading.rows(),
                now=time.time(),
                width=ui.width(),
                simulated=simulate,
                never_signed_in=unsigned,
                forecasts=ahead,
                inventory=True,
            )
        )
    gate(raw, fail_above)
    return Exit.OK


async def _read_live(
    server: Server, ui: UI, *, max_age: int | None, timeout: float | None, ids: Sequence[str], simulated: bool
) -> Reading:
    """`read_pool` on a terminal: a spinner per pending account, rows filling in as they arrive."""
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("line" if ui.ascii_only else "dots", text=Text("reading…", style="dim"))
    console = ui.out

    def view(reading: Reading) -> RenderableType:
        return render.status_table(
            reading.rows(), now=time.time(), width=console.width, simulated=simulated, spinner=spinner
        )

    with Live(console=console, transient=True, refresh_per_second=8, get_renderable=None) as live:
        live.update(Text("reading the pool…", style="dim") if not ids else view(Reading(ids)), refresh=True)
        return await read_pool(
            server, max_age=max_age, timeout=timeout, ids=ids, changed=lambda r: live.update(view(r), refresh=True)
        )


async def forecasts(server: Server) -> dict[str, Any] | None:
    """Every account's forecasts, read after the pool so they include its newest read; None when the server
    cannot say (an older service without `accountPool/forecast`): the table is shown without them."""
    import logging

    try:
        return await server.forecast()
    except (RpcError, CommandFailed) as exc:
        logging.getLogger(__name__).info("no forecasts: %s", getattr(exc, "message", exc))
        return None


# -- --watch ---------------------------------------------------------------------------------


def next_wait(previous: float, interval: float, *, error: bool) -> float:
    """The pause before the next `--watch` read: the interval, doubled after each erroring read (capped)."""
    if not error:
        return interval
    return min(MAX_BACKOFF, max(previous * 2, interval * 2))


def _had_error(reading: Reading | None) -> bool:
    """A failed list, or an account whose read failed (a sign-in problem is not worth backing off for)."""
    if reading is None:
        return True
    return any(r.get("status") == ext.AccountStatus.UNAVAILABLE.value for r in reading.result())


async def _watch(
    server: Server, ui: UI, interval: float, *, timeout: float | None, compact: bool, simulated: bool
) -> None:
    """Re-list until Ctrl-C. Summaries younger than the interval are reused; errors double the wait.

    On a terminal the table is redrawn in place; otherwise each tick is one line (or one JSON array)."""
    console = ui.out
    in_place = console.is_terminal and not ui.as_json and not compact
    max_age: int | None = None
    wait = interval
    live_context: Any = None
    if in_place:
        from rich.live import Live

        live_context = Live(console=console, auto_refresh=False, vertical_overflow="visible")
        live_context.__enter__()
    try:
        while True:
            reading: Reading | None
            problem = ""
            try:
                reading = await read_pool(server, max_age=max_age, timeout=timeout or interval * 4, abandon=False)
            except CommandFailed as failure:
                if failure.code in (Exit.USAGE, Exit.SERVER):
                    raise
                reading, problem = None, failure.message
            wait = next_wait(wait, interval, error=_had_error(reading))
            stamp = time.strftime("%H:%M:%S")
            if ui.as_json:
                ui.emit_json(reading.result() if reading else {"error": problem, "at": int(time.time())}, compact=True)
            elif not in_place:
                line = compact_line(reading.result()) if reading else f"error: {problem}"
                console.print(Text(f"{stamp} {line}"), soft_wrap=True)
            else:
                body: RenderableType = Text(problem, style="yellow")
                if reading:
                    ahead = await forecasts(server) if reading.timed_out is None else None
                    body = render.status_table(
                        reading.rows(),
                        now=time.time(),
                        width=console.width,
                        simulated=simulated,
                        forecasts=ahead,
                        inventory=True,
                    )
                note = f"every {interval:g} s · Ctrl-C to stop"
                if wait > interval:
                    note = f"an error: next read in {wait:g} s · Ctrl-C to stop"
                live_context.update(Group(body, Text(f"{stamp} · {note}", style="dim")), refresh=True)
            max_age = int(interval)
            await anyio.sleep(wait)
    finally:
        if live_context is not None:
            live_context.__exit__(None, None, None)
