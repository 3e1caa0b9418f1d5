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
from app_server.cli.plain.credits import credits_text
from app_server.cli.quick import too_old
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError


async def credits(ui: UI, *, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.reset_credits()
        except RpcError as exc:
            raise too_old(rpc_failure(exc), server.name) from None
    if ui.as_json:
        ui.emit_json(raw)
        return Exit.OK
    if not ui.out.is_terminal:  # a pipe: the plain view (as on a running service, `quick`)
        ui.out.file.write(credits_text(raw, now=time.time()))
        return Exit.OK
    inventory = ext.AccountPoolResetCreditsListResponse.model_validate(raw)
    ui.show(render.credits_view(inventory, now=time.time(), width=ui.width()))
    return Exit.OK
