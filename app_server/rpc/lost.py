"""What a client says of a request whose answer was lost: the service died, restarted or went silent.

Shared by `codex-limits proxy` (standard library only: nothing else is imported here) and the async
`Client`. A request that may spend a saved reset (`SPENDS`) has an unknown outcome: the same
idempotencyKey must be re-sent, in the server's own words for an unknown outcome
(`pool.errors.RESEND`; a test keeps the two equal). Anything else: the service went away.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs the proxy milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any, Final

INTERNAL_ERROR: Final = -32603
"""The code the server answers an unknown outcome with (a consume that timed out or failed after sending)."""
SPENDS: Final = ("account/rateLimitResetCredit/consume", "accountPool/resetCredit/apply")
"""Methods that may spend a saved reset."""
RESEND: Final = "re-send the same idempotencyKey to learn its outcome (it will not spend a second reset)"
GONE: Final = "the codex-limits service went away before answering"


def spend_of(method: str, params: Any) -> tuple[str | None, str | None] | None:
    """For a request that may spend: its `(idempotencyKey, accountId)` (None where not given); else None."""
    if method not in SPENDS:
        return None
    key = account = None
    if isinstance(params, dict):
        key, account = params.get("idempotencyKey"), params.get("accountId")
    elif isinstance(params, list) and params:  # the consume's positional form: [idempotencyKey, creditId]
        key = params[0]
    return (key if isinstance(key, str) else None), (account if isinstance(account, str) else None)


def resend(key: str | None) -> str:
    """`RESEND`, naming the key when there is one."""
    if key is None:
        return RESEND
    import json

    return RESEND.replace("idempotencyKey", f"idempotencyKey {json.dumps(key, ensure_ascii=False)}", 1)


def unknown_outcome(key: str | None) -> str:
    return "its outcome is unknown: " + resend(key)


def error(method: str, params: Any, why: str, lead: str = GONE) -> dict[str, Any]:
    """The JSON-RPC `error` object for a request the service will never answer (`why` says how)."""
    lost = f"{lead} ({why})"
    spend = spend_of(method, params)
    if spend is None:
        return {"code": INTERNAL_ERROR, "message": f"{lost}; send it again once the service runs"}
    key, account = spend
    data: dict[str, Any] = {"outcome": "unknown", "idempotencyKey": key}
    if account is not None:
        data["accountId"] = account
    return {"code": INTERNAL_ERROR, "message": f"{lost}; {unknown_outcome(key)}", "data": data}
