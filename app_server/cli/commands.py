"""`refresh` and `history`: one request each, shown with the account and history views."""

from __future__ import annotations

import time

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.plain.status import with_readiness
from app_server.cli.plain.words import never_signed_in
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError

NOTHING_DONE = (ext.AccountStatus.REAUTH_REQUIRED, ext.AccountStatus.UNSUPPORTED)
"""A refresh that could not even be tried (sign-in needed, API-key account): exit 3, like a refusal."""


async def refresh(ui: UI, *, account: str, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.refresh(account)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    summary = render.Summary.model_validate(raw)
    if ui.as_json:
        ui.emit_json(with_readiness(raw))
    unsigned = bool(never_signed_in([raw], simulated=simulate))
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
    async with connect(simulate, log_level=ui.log_level) as server:
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
