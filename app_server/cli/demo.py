"""`demo`: the whole story (status, apply, a refusal, sign-in needed, history) against the simulated upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text

from app_server.cli import render
from app_server.cli.apply import apply_on
from app_server.cli.connection import Server, connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import Interrupt, rpc_failure
from app_server.cli.status import summaries
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError


async def _list(server: Server, max_age: int | None) -> list[dict[str, Any]]:
    try:
        return await server.accounts(max_age)
    except RpcError as exc:
        raise rpc_failure(exc) from None


async def demo(ui: UI, interrupt: Interrupt) -> Exit:
    """The whole story against a simulated upstream, through one connection so its state carries over."""
    say = _narrator(ui)
    say(
        "codex-limits demo: a simulated upstream on 127.0.0.1 with four made-up accounts. "
        "Nothing here touches a real account or the network.",
        step=None,
    )
    async with connect(True, log_level=ui.log_level) as server:
        raw = await _list(server, None)
        pool = {s.account_id: s for s in summaries(raw)}
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
        pool = {s.account_id: s for s in summaries(raw)}
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
        carol = render.Summary.model_validate(await server.refresh("carol"))
        ui.show(render.account_detail(carol, now=time.time(), width=ui.width()))

        say(
            "Every apply is recorded in a ledger before it is sent, so an interrupted one is re-sent with its own "
            "key instead of spending twice. `codex-limits history` shows it:",
            step=6,
        )
        entries = [ext.ApplyRecord.model_validate(e) for e in await server.history(None, None)]
        ui.show(render.history_table(entries, now=time.time(), width=ui.width()))

        delivered = server.scrub(await _delivered_alerts(server.sandbox))
        say(
            "Alerts also reach the tools you watch, without a script: signed webhooks and ntfy topics configured "
            f"in config.toml. The simulated world's test webhook received {_count(len(delivered), 'alert')}, "
            "each with a valid signature:",
            step=7,
        )
        for alert in delivered[:4]:
            severity, message = alert.get("severity", "?"), alert.get("message", "")
            ui.show(Text.assemble(("  ✓ ", "green"), (f"{severity}: ", "bold"), message))
    say(
        "That was all simulated. With your own accounts: `codex-limits accounts add work ~/.codex-work`, "
        "then `codex-limits status` and `codex-limits apply work`.",
        step=None,
    )
    return Exit.OK


async def _delivered_alerts(sandbox: str | None, wait: float = 10.0) -> list[dict[str, Any]]:
    """The alerts the simulated world's test webhook accepted: delivery runs in the background, so wait a
    little for the first one."""
    import json

    import anyio

    from app_server.sandbox import ALERT_SINK_FILE

    if sandbox is None:
        return []
    path = Path(sandbox) / ALERT_SINK_FILE

    def complete_lines() -> list[str]:  # a line still being written has no newline yet
        return path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []

    with anyio.move_on_after(wait):
        while not complete_lines():  # noqa: ASYNC110 - the server process writes it: nothing here to wait on
            await anyio.sleep(0.05)
    return [json.loads(line)["alert"] for line in complete_lines() if line.strip()]


def _narrator(ui: UI) -> Callable[..., None]:
    def say(text: str, *, step: int | None) -> None:
        ui.show("")
        ui.show(Text.assemble((f"Step {step} · " if step is not None else "» ", "bold cyan"), text))

    return say


def _count(n: int | None, noun: str) -> str:
    if n is None:
        return f"an unknown number of {noun}s"
    return f"{n} {noun}{'' if n == 1 else 's'}"
