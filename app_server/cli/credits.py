"""`codex-limits credits`: every available saved reset of every account, earliest expiry first.

One `accountPool/resetCredits/list` request (the running service's, else a spawned server's); it reads,
never applies. `--json` prints the method's result as the server gave it.
"""

from __future__ import annotations

import time

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.quick import show_credits, too_old
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError


async def credits(ui: UI, *, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.reset_credits()
        except RpcError as exc:
            raise too_old(rpc_failure(exc), server.name) from None
    if ui.as_json or not ui.out.is_terminal:  # what a running service's `quick` path prints
        show_credits(ui.out.file, raw, as_json=ui.as_json)
        return Exit.OK
    inventory = ext.AccountPoolResetCreditsListResponse.model_validate(raw)
    ui.show(render.credits_view(inventory, now=time.time(), width=ui.width()))
    return Exit.OK
