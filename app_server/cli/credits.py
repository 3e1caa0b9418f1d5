"""`codex-limits credits`: every available saved reset of every account, earliest expiry first.

One `accountPool/resetCredits/list` request (the running service's, else a spawned server's); it reads,
never applies. `--json` prints the method's result as the server gave it.
"""

from __future__ import annotations

import time

from app_server.cli import render
from app_server.cli.connection import connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import rpc_failure
from app_server.cli.terminal import UI
from protocol import ext
from protocol.jsonrpc import RpcError
from protocol.methods import POOL_RESET_CREDITS_LIST


async def credits(ui: UI, *, simulate: bool) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        try:
            raw = await server.reset_credits()
        except RpcError as exc:
            if "unknown variant" in exc.message and POOL_RESET_CREDITS_LIST.name in exc.message:
                raise CommandFailed(
                    Exit.SERVER,
                    f"{server.name} is older than this command and cannot list saved resets; "
                    "restart it (codex-limits service stop, then service start)",
                ) from None
            raise rpc_failure(exc) from None
    if ui.as_json:
        ui.emit_json(raw)
        return Exit.OK
    inventory = ext.AccountPoolResetCreditsListResponse.model_validate(raw)
    ui.show(render.credits_view(inventory, now=time.time(), width=ui.width()))
    return Exit.OK
