"""The operator commands that need little of their own: refresh, history, accounts and the demo.

Connecting, the terminal and expected failures live in `session`; `status` and `apply` have their
own modules. The names below `session` are re-exported, so `commands.connect`, `commands.UI` and
friends keep working for code written against the older single module.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from app_server.cli import render
from app_server.cli.apply import apply, apply_on
from app_server.cli.exits import Exit
from app_server.cli.session import (
    UI,
    CommandFailed,
    Interrupt,
    Server,
    connect,
    fail,
    never_signed_in,
    rpc_failure,
    run,
    run_local,
)
from app_server.cli.status import status, summaries, with_readiness
from protocol import ext
from protocol.jsonrpc import RpcError

if TYPE_CHECKING:
    from app_server.pool.accounts import AccountEntry

__all__ = [
    "UI",
    "CommandFailed",
    "Interrupt",
    "Server",
    "accounts_add",
    "accounts_list",
    "accounts_remove",
    "apply",
    "apply_on",
    "connect",
    "demo",
    "fail",
    "history",
    "refresh",
    "rpc_failure",
    "run",
    "run_local",
    "status",
]


# -- refresh and history ---------------------------------------------------------------------


NOTHING_DONE = (ext.AccountStatus.REAUTH_REQUIRED, ext.AccountStatus.UNSUPPORTED)
"""A refresh that could not even be tried (sign-in needed, API-key account): exit 3, like a refusal."""


async def refresh(ui: UI, *, account: str, simulate: bool) -> Exit:
    async with connect(simulate) as server:
        try:
            raw = await server.refresh(account)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    summary = render.Summary.model_validate(raw)
    if ui.as_json:
        ui.emit_json(with_readiness(raw))
    unsigned = bool(never_signed_in([summary], simulated=simulate))
    if not ui.as_json:
        ui.show(
            render.account_detail(
                summary, now=time.time(), width=ui.width(), simulated=simulate, never_signed_in=unsigned
            )
        )
    if summary.error is not None:
        code = Exit.REFUSED if summary.status in NOTHING_DONE else Exit.UPSTREAM
        step = render.next_step(summary, simulated=simulate, never_signed_in=unsigned)
        raise CommandFailed(code, f"{account}: {summary.error.message}" + (f"; {step}" if step else ""))
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


async def _list(server: Server, max_age: int | None) -> list[dict[str, Any]]:
    try:
        return await server.accounts(max_age)
    except RpcError as exc:
        raise rpc_failure(exc) from None


# -- accounts.toml ---------------------------------------------------------------------------


def _accounts_file() -> Any:
    from app_server.config import Settings
    from app_server.pool.accounts import FILE_NAME, AccountsFile

    settings = Settings.from_env()
    return AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)


def accounts_list(ui: UI, *, simulate: bool = False) -> Exit:
    if simulate:
        from app_server.cli.session import SIMULATED
        from app_server.pool.accounts import FILE_NAME, AccountsFile
        from app_server.sandbox import simulated_world

        with simulated_world(seed_history=False) as (_, settings):
            root = str(settings.data_home.parent)
            pool = AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)
            return _list_accounts(ui, pool, lambda text: text.replace(root, SIMULATED))
    return _list_accounts(ui, _accounts_file(), lambda text: text)


def _list_accounts(ui: UI, pool: Any, shown: Callable[[str], str]) -> Exit:
    """The pool's accounts; `shown` is what a path becomes on screen (the simulated world's is gone at exit)."""
    from app_server.pool.errors import AccountsFileError

    try:
        entries = pool.entries()
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, shown(str(exc))) from None
    rows = [render.AccountRow(e.id, e.label, e.codex_home, (e.codex_home / "auth.json").is_file()) for e in entries]
    if ui.as_json:
        ui.emit_json(
            [
                {"id": r.id, "label": r.label, "codexHome": shown(str(r.codex_home)), "authJson": r.signed_in}
                for r in rows
            ]
        )
        return Exit.OK
    ui.show(
        render.accounts_table(
            [dataclasses.replace(r, codex_home=Path(shown(str(r.codex_home)))) for r in rows], width=ui.width()
        )
    )
    where = pool.path if pool.path.exists() else f"{pool.path} (not created yet: the pool is just $CODEX_HOME)"
    ui.show(Text(f"pool file: {shown(str(where))}", style="dim"))
    return Exit.OK


def accounts_add(ui: UI, *, account: str, codex_home: str, label: str | None) -> Exit:
    from app_server.pool.errors import AccountsFileError

    pool = _accounts_file()
    home = Path(codex_home).expanduser().absolute()
    try:
        same = next((e for e in pool.entries() if _same_dir(e.codex_home, home)), None)
        if same is not None and same.id != account:
            raise CommandFailed(
                Exit.USAGE, f"{home} is already in the pool as account {same.id!r}: one Codex home is one account"
            )
        entry = pool.add(account, home, label)
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, str(exc)) from None
    ui.show(f"Added account {entry.id!r} ({entry.label}) with CODEX_HOME {entry.codex_home} to {pool.path}.")
    twin = _signed_in_elsewhere(pool.entries(), entry)
    if twin is not None:
        ui.err.print(
            Text.assemble(
                ("warning: ", "yellow bold"),
                f"{entry.codex_home} and {twin.codex_home} (account {twin.id!r}) are signed in to the same "
                "ChatGPT account: they share its saved resets, and an apply through either one waits for the other.",
            ),
            soft_wrap=True,
        )
    if not (entry.codex_home / "auth.json").is_file():
        what = "has no auth.json" if entry.codex_home.is_dir() else "does not exist yet"
        ui.err.print(
            Text.assemble(
                ("warning: ", "yellow bold"),
                f"{entry.codex_home} {what}, so the account cannot be read until it signs in: "
                f"run `CODEX_HOME={entry.codex_home} codex login`.",
            ),
            soft_wrap=True,  # a path broken across lines cannot be pasted
        )
    return Exit.OK


def _signed_in_elsewhere(entries: list[AccountEntry], entry: AccountEntry) -> AccountEntry | None:
    """Another pool entry whose Codex home is signed in to the same ChatGPT account as `entry`'s."""
    from app_server.pool.pool import home_identity

    identity = home_identity(entry.codex_home)
    if not identity.startswith("chatgpt:"):
        return None
    return next((e for e in entries if e.id != entry.id and home_identity(e.codex_home) == identity), None)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def accounts_remove(ui: UI, *, account: str) -> Exit:
    from app_server.pool.errors import AccountsFileError

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
        "codex-limits demo: a simulated upstream on 127.0.0.1 with four made-up accounts. "
        "Nothing here touches a real account or the network.",
        step=None,
    )
    async with connect(True) as server:
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

        delivered = server.scrub(await _delivered_alerts(server.sandbox))  # alert delivery (#23)
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
    """The alerts the simulated world's test webhook accepted (alert delivery, #23): delivery runs in the
    background, so wait a little for the first one."""
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
