"""`refresh` and `history`: one request each, shown with the account and history views."""

from __future__ import annotations

import time

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.plain.words import never_signed_in
from app_server.cli.quick import refresh_checked, show_history, show_refresh
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError


async def refresh(ui: UI, *, account: str, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.refresh(account)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    if ui.as_json or not ui.out.is_terminal:  # what a running service's `quick` path prints
        show_refresh(ui.out.file, raw, as_json=ui.as_json, simulated=simulate)
        return Exit.OK
    unsigned = bool(never_signed_in([raw], simulated=simulate))
    summary = render.Summary.model_validate(raw)
    ui.show(
        render.account_detail(summary, now=time.time(), width=ui.width(), simulated=simulate, never_signed_in=unsigned)
    )
    refresh_checked(raw, simulated=simulate, never_signed_in=unsigned)
    return Exit.OK


async def history(ui: UI, *, account: str | None, limit: int | None, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.history(account, limit)
        except RpcError as exc:
            raise rpc_failure(exc) from None
    if ui.as_json or not ui.out.is_terminal:  # what a running service's `quick` path prints
        show_history(ui.out.file, raw, as_json=ui.as_json)
        return Exit.OK
    entries = [ext.ApplyRecord.model_validate(item) for item in raw]
    ui.show(render.history_table(entries, now=time.time(), width=ui.width()))
    return Exit.OK
