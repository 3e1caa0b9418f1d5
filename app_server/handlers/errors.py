"""The one table where domain errors become wire errors: code, message (upstream's texts where the
contract has them) and `error.data`. Handlers are wrapped by `wire_errors`; nothing below the
handlers builds an `RpcError`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from app_server.config import ConfigError
from app_server.pool.errors import (
    AccountsFileError,
    ApplyBusy,
    ApplyFailed,
    ApplyRefused,
    GuardUnavailable,
    KeyTaken,
    OutcomeUnknown,
    UnknownAccount,
)
from app_server.store.base import StoreError
from app_server.upstream.errors import AuthRequired
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError

READ_FAILED: Final = "failed to fetch codex rate limits: "
CONSUME_FAILED: Final = "failed to consume rate limit reset: "
CONSUME_TIMED_OUT: Final = "rate limit reset consume timed out"
RESEND: Final = "re-send the same idempotencyKey to learn its outcome (it will not spend a second reset)"
UNKNOWN: Final = "unknown"

REASON_TEXT: Final = {
    ext.ResetDisabledReason.NO_CREDIT: "it has no saved reset available",
    ext.ResetDisabledReason.REAUTH_REQUIRED: "it needs to sign in again (`codex login` with its CODEX_HOME)",
    ext.ResetDisabledReason.UNSUPPORTED: "it cannot use saved resets",
    ext.ResetDisabledReason.UNAVAILABLE: "its usage could not be read just now",
    ext.ResetDisabledReason.PENDING_APPLY: "an earlier apply has an unknown outcome; re-send its idempotencyKey "
    "to settle it before starting a new one",
    ext.ResetDisabledReason.UNKNOWN_CREDIT: "it has no saved reset with that creditId",
}


def to_rpc(exc: Exception) -> RpcError | None:
    """The wire error for a domain error, or None for anything unforeseen (the dispatcher's -32603)."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, AuthRequired):
        return RpcError(INVALID_REQUEST, str(exc))
    if isinstance(exc, ApplyRefused):
        text = REASON_TEXT[exc.reason]
        if exc.pending_key is not None:
            text += f" ({exc.pending_key!r})"
        if exc.available_credit_ids is not None and exc.reason is ext.ResetDisabledReason.UNKNOWN_CREDIT:
            text += "; available: " + (", ".join(exc.available_credit_ids) or "none")
        return RpcError(
            INVALID_REQUEST,
            f"cannot apply a saved reset on account {exc.account_id!r}: {text}",
            ext.ApplyRefusedData(
                account_id=exc.account_id,
                disabled_reason=exc.reason,
                pending_idempotency_key=exc.pending_key,
                available_credit_ids=exc.available_credit_ids,
            ),
        )
    if isinstance(exc, KeyTaken):
        return RpcError(
            INVALID_REQUEST,
            f"idempotencyKey {exc.key!r} belongs to an apply on account {exc.owner!r}; use a new key for this account",
        )
    if isinstance(exc, ApplyBusy):
        return RpcError(
            INVALID_REQUEST,
            f"another apply on account {exc.account_id!r} is still running (waited {exc.waited:g} s); try again",
        )
    if isinstance(exc, OutcomeUnknown):
        resend = f"; the attempt stays pending: {RESEND} ({exc.key!r})"
        data = {"accountId": exc.account_id, "idempotencyKey": exc.key, "outcome": UNKNOWN}
        if exc.timeout:
            return RpcError(INTERNAL_ERROR, CONSUME_TIMED_OUT + resend, data)
        if exc.after_consume:
            text = f"the outcome of the apply on account {exc.account_id!r} is unknown ({exc.detail})"
            return RpcError(INTERNAL_ERROR, text + resend, data)
        return RpcError(INTERNAL_ERROR, CONSUME_FAILED + exc.detail + resend, data)
    if isinstance(exc, ApplyFailed):
        return RpcError(INTERNAL_ERROR, CONSUME_FAILED + exc.detail + "; nothing was spent")
    if isinstance(exc, GuardUnavailable):
        return RpcError(INTERNAL_ERROR, f"{exc}; nothing was spent")
    if isinstance(exc, (UnknownAccount, AccountsFileError)):
        return RpcError(INVALID_REQUEST, str(exc))
    if isinstance(exc, (StoreError, ConfigError)):
        return RpcError(INTERNAL_ERROR, str(exc))
    return None


H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def wire_errors(handler: H) -> H:
    """Run `handler`; a domain error it raises leaves as its wire error."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            error = to_rpc(exc)
            if error is None or error is exc:
                raise
            raise error from None

    return wrapped  # type: ignore[return-value]
