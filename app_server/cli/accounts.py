"""`accounts list|add|remove`: the pool file (`accounts.toml` in the data directory), edited on purpose here.

The one place the CLI touches a pool file itself; everything else goes through a server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from app_server.cli import render
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.terminal import UI

if TYPE_CHECKING:
    from app_server.pool.accounts import AccountEntry


def _accounts_file() -> Any:
    from app_server.config import Settings
    from app_server.pool.accounts import FILE_NAME, AccountsFile

    settings = Settings.from_env()
    return AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)


def accounts_list(ui: UI, *, simulate: bool = False) -> Exit:
    if simulate:
        from app_server.cli.connection import SIMULATED
        from app_server.pool.accounts import FILE_NAME, AccountsFile
        from app_server.sandbox import simulated_world

        with simulated_world(seed_history=False) as (_, settings):
            root = str(settings.data_home.parent)
            pool = AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)
            return _list_accounts(ui, pool, lambda text: text.replace(root, SIMULATED))
    return _list_accounts(ui, _accounts_file(), lambda text: text)


def _list_accounts(ui: UI, pool: Any, shown: Callable[[str], str]) -> Exit:
    """The pool's accounts; `shown` is what a path becomes on screen (the simulated world's is gone at exit)."""
    from app_server.pool.accounts import AccountsFileError

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
    from app_server.pool.accounts import AccountsFileError

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
    from app_server.pool.accounts import home_identity

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
    from app_server.pool.accounts import AccountsFileError

    pool = _accounts_file()
    try:
        pool.remove(account)
    except AccountsFileError as exc:
        raise CommandFailed(Exit.USAGE, str(exc)) from None
    ui.show(f"Removed account {account!r} from {pool.path} (its CODEX_HOME and sign-in are left as they are).")
    return Exit.OK
