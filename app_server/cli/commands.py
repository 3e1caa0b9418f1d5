"""`refresh` and `history`: one request each, shown with the account and history views."""

from __future__ import annotations

import time

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.plain.account import account_text, refresh_failure
from app_server.cli.plain.history import history_text
from app_server.cli.plain.status import with_readiness
from app_server.cli.plain.words import never_signed_in
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError


async def refresh(ui: UI, *, account: str, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.refresh(account)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    unsigned = bool(never_signed_in([raw], simulated=simulate))
    if ui.as_json:
        ui.emit_json(with_readiness(raw))
    elif not ui.out.is_terminal:  # a pipe: the plain view (as on a running service, `quick`)
        ui.out.file.write(account_text(raw, now=time.time(), simulated=simulate, never_signed_in=unsigned))
    else:
        summary = render.Summary.model_validate(raw)
        ui.show(
            render.account_detail(
                summary, now=time.time(), width=ui.width(), simulated=simulate, never_signed_in=unsigned
            )
        )
    failure = refresh_failure(raw, simulated=simulate, never_signed_in=unsigned)
    if failure is not None:
        raise CommandFailed(Exit.REFUSED if failure[0] else Exit.UPSTREAM, failure[1])
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
    if not ui.out.is_terminal:  # a pipe: the plain view (as on a running service, `quick`)
        ui.out.file.write(history_text(raw))
        return Exit.OK
    entries = [ext.ApplyRecord.model_validate(item) for item in raw]
    ui.show(render.history_table(entries, now=time.time(), width=ui.width()))
    return Exit.OK
