"""`codex-limits apply`: show the account, name the credit it spends, confirm, apply once, show what changed.

Nothing here says "nothing was spent" unless it is certain: a refusal (the server checked before any
consume), a declined prompt, or a ledger entry recorded as failed. After an answer that never came,
the outcome is unknown and the same command re-sends the same attempt (the pending key).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from rich.text import Text

from app_server.cli import render
from app_server.cli.connection import Server, connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.failures import Interrupt, rpc_failure
from app_server.cli.plain.words import never_signed_in
from app_server.cli.prompt import confirm, stdin_is_terminal
from app_server.cli.terminal import UI
from app_server.rpc import lost
from protocol import ext
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

NOTHING_SPENT = "nothing was spent"


async def apply(
    ui: UI, interrupt: Interrupt, *, account: str, credit_id: str | None, yes: bool, simulate: bool
) -> Exit:
    async with connect(simulate, log_level=ui.log_level) as server:
        return await apply_on(server, ui, interrupt, account=account, credit_id=credit_id, yes=yes)


def _refusal(account: str, reason: str, message: str, **data: Any) -> CommandFailed:
    """A refusal before anything was sent: exit 3, and with `--json` the same error object a server would send."""
    payload = {
        "error": {
            "code": INVALID_REQUEST,
            "message": message,
            "data": {"accountId": account, "disabledReason": reason, **data},
        }
    }
    return CommandFailed(Exit.REFUSED, f"{message}; {NOTHING_SPENT}", payload)


def _unknown_credit(account: str, credit_id: str, available: list[str]) -> CommandFailed:
    listed = ", ".join(available) if available else "none"
    return _refusal(
        account,
        render.UNKNOWN_CREDIT,
        f"cannot apply on {account}: it has no saved reset {credit_id!r} (available: {listed})",
        availableCreditIds=available,
    )


async def apply_on(
    server: Server, ui: UI, interrupt: Interrupt, *, account: str, credit_id: str | None, yes: bool
) -> Exit:
    """Show the account, confirm, apply once with an idempotency key, show what changed."""
    interrupt.code, interrupt.message = Exit.REFUSED, f"cancelled; {NOTHING_SPENT}"
    simulated = server.sandbox is not None
    try:
        summary = render.Summary.model_validate(await server.refresh(account))
    except RpcError as exc:
        raise rpc_failure(exc) from None
    now = time.time()
    unsigned = bool(never_signed_in([render.wire(summary)], simulated=simulated))
    ui.show(render.account_detail(summary, now=now, width=ui.width(), simulated=simulated, never_signed_in=unsigned))
    pending = summary.pending_apply
    if pending is not None:
        key, chosen = pending.idempotency_key, pending.credit_id
        ui.show(
            Text(
                f"An earlier apply on {account} (started {render.stamp(pending.started_at)}) never reported its "
                f"outcome. Re-sending that same attempt (key {key}): if it went through, nothing more is spent.",
                style="yellow",
            )
        )
        if credit_id is not None and credit_id != chosen:
            ui.show(Text(f"Ignoring --credit {credit_id}: the earlier attempt is re-sent exactly as it was."))
    else:
        key = str(uuid.uuid4())
        listed = summary.reset_credits.credits if summary.reset_credits is not None else None
        available = [c.id for c in render.available_credits(summary)]
        if credit_id is not None and listed is not None and credit_id not in available:
            raise _unknown_credit(account, credit_id, available)
        if not summary.reset_action.enabled and not yes:
            reason = summary.reset_action.disabled_reason
            words = render.reason_words(reason, long=True)
            step = render.next_step(summary, simulated=simulated, never_signed_in=unsigned)
            raise _refusal(account, str(reason), f"cannot apply on {account}: {words}" + (f" ({step})" if step else ""))
        spend = render.credit_to_spend(summary, credit_id)
        # Spend exactly the credit the prompt names, so what was confirmed is what the ledger records.
        chosen = spend.id if spend is not None else credit_id
    warning = summary.reset_action.warning
    ui.show("")
    for line in render.apply_prompt(summary, chosen, now=now):
        ui.show(line)
    if not yes:
        if not stdin_is_terminal():
            raise CommandFailed(
                Exit.REFUSED,
                "not applying: standard input is not a terminal, so nobody can confirm; "
                f"pass --yes to apply without asking ({NOTHING_SPENT})",
                {"error": {"code": INVALID_REQUEST, "message": "not confirmed: no terminal and no --yes"}},
            )
        ui.show(Text("⚠ " + warning, style="bold yellow"))
        if not await confirm(ui, f"Apply a saved reset on {account} now? [y/N] "):
            raise CommandFailed(
                Exit.REFUSED,
                f"not applied; {NOTHING_SPENT}",
                {"error": {"code": INVALID_REQUEST, "message": "declined at the prompt"}},
            )
    elif summary.reset_action.enabled or pending is not None:
        ui.show(Text.assemble(("⚠ " + warning, "yellow"), " (--yes given: not asking)"))
    else:
        ui.show("--yes given: sending it anyway; the server checks again and spends nothing if it still cannot apply.")
    rerun = f"run `codex-limits apply {account}` again: it re-sends the same attempt, which cannot spend twice"
    interrupt.code = Exit.INTERRUPTED
    interrupt.message = f"interrupted while the apply on {account} was in flight: its outcome is unknown; {rerun}"
    try:
        raw = await server.apply(account, key, chosen)
    except RpcError as exc:
        raise await _apply_failure(server, exc, account, key, rerun) from None
    except CommandFailed as failure:  # no answer at all: the service died, restarted or went silent
        failure.message += f"; the apply's outcome is unknown (idempotencyKey {key}): {rerun}"
        if failure.payload is None:
            failure.payload = _unknown_payload(failure.message, account, key)
        raise
    interrupt.code, interrupt.message = Exit.INTERRUPTED, "interrupted"
    response = ext.AccountPoolApplyResponse.model_validate(raw)
    ui.show("")
    ui.show(render.apply_result(response, now=time.time(), width=ui.width()))
    if ui.as_json:
        ui.emit_json(raw)
    return Exit.OK if response.outcome in (Outcome.RESET, Outcome.ALREADY_REDEEMED) else Exit.REFUSED


def _unknown_payload(message: str, account: str, key: str) -> dict[str, Any]:
    """With `--json`: the error a server would send for an unknown outcome (as `codex-limits proxy` does)."""
    data = {"outcome": "unknown", "idempotencyKey": key, "accountId": account}
    return {"error": {"code": lost.INTERNAL_ERROR, "message": message, "data": data}}


async def _apply_failure(server: Server, exc: RpcError, account: str, key: str, rerun: str) -> CommandFailed:
    failure = rpc_failure(exc, invalid=Exit.REFUSED)
    data = exc.data if isinstance(exc.data, dict) else {}
    if data.get("disabledReason") == render.UNKNOWN_CREDIT:
        ids = data.get("availableCreditIds")
        listed = ", ".join(ids) if isinstance(ids, list) and ids else "none"
        failure.message = f"{exc.message} (available: {listed})"
    if failure.code == Exit.REFUSED:
        failure.message += f"; {NOTHING_SPENT}"
    elif failure.code == Exit.UPSTREAM:
        failure.message += await _settled(server, account, key, rerun)
    return failure


async def _settled(server: Server, account: str, key: str, rerun: str) -> str:
    """After a failed apply: what the ledger says about this attempt, and what to do."""
    with contextlib.suppress(Exception):
        for entry in await server.history(account, 20):
            if entry.get("idempotencyKey") != key:
                continue
            if entry.get("status") == ext.ApplyStatus.FAILED.value:
                return f" — the server recorded the attempt as failed: {NOTHING_SPENT}"
            if entry.get("status") == ext.ApplyStatus.PENDING.value:
                return f" — the attempt is recorded as pending (outcome unknown): {rerun}"
    return f" — its outcome is unknown: {rerun}"
