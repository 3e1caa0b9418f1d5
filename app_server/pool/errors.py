"""What the pool raises, each with its wire text and `error.data` (see `app_server.errors` for the edges).

CodexLimitsError
└── PoolError
    ├── GuardUnavailable    the claim cannot be taken (the marker beside the Codex home, the ledger or the
    │                       database cannot be written or reached) before the consume: nothing is spent
    ├── OutcomeUnknown      the consume may have happened (timeout, dropped connection, 5xx, unreadable
    │                       answer, or any failure after it was sent: the ledger gone, a crash of a step):
    │                       the attempt stays pending, settle it by re-sending the same key
    ├── ApplyFailed         upstream refused the consume (a 4xx): nothing was spent
    ├── ReadFailed          an account's usage could not be read: its summary's `error`, never raised
    └── (RequestError: -32600)
        ├── UnknownAccount      the id is not in the pool
        ├── AccountsFileError   accounts.toml cannot be used as written
        ├── ApplyRefused        refused before any upstream call: the reason says why
        ├── KeyTaken            the idempotency key belongs to an apply on another account
        ├── ApplyBusy           another apply on the same upstream account held the lock too long
        └── SignInRequired      an account cannot be read until someone signs in: its summary's `error`
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from app_server.errors import ERROR_CODE, CodexLimitsError, RequestError
from app_server.upstream.errors import CONSUME_FAILED, CONSUME_TIMED_OUT
from protocol import ext

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


class PoolError(CodexLimitsError):
    """Base of the pool's errors."""


class AccountsFileError(PoolError, RequestError):
    """accounts.toml cannot be used as written; the message says where and why."""


class UnknownAccount(PoolError, RequestError):
    """The id is not in the pool; the text names the pool's ids."""

    http_status: ClassVar[int] = 404
    http_error: ClassVar[str] = "accountNotFound"

    def __init__(self, account_id: str, known: list[str]) -> None:
        super().__init__(f"unknown account {account_id!r} (pool: {', '.join(known)})")
        self.account_id = account_id
        self.known = known

    @property
    def data(self) -> dict[str, Any]:
        return {ERROR_CODE: self.http_error, "accountId": self.account_id}


class ApplyRefused(PoolError, RequestError):
    """Refused without calling upstream (or upstream proved the account cannot apply: 401, 404). On the admin
    API the reason is the code (`noCredit`, `pendingApply`, ...); `applyRefused` is for a reason it does not know."""

    http_status: ClassVar[int] = 409
    http_error: ClassVar[str] = "applyRefused"

    def __init__(
        self,
        account_id: str,
        reason: ext.ResetDisabledReason,
        *,
        pending_key: str | None = None,
        available_credit_ids: list[str] | None = None,
    ) -> None:
        super().__init__(f"apply on {account_id!r} refused: {reason.value}")
        self.account_id = account_id
        self.reason = reason
        self.pending_key = pending_key
        self.available_credit_ids = available_credit_ids

    @property
    def message(self) -> str:
        text = REASON_TEXT[self.reason]
        if self.pending_key is not None:
            text += f" ({self.pending_key!r})"
        if self.available_credit_ids is not None and self.reason is ext.ResetDisabledReason.UNKNOWN_CREDIT:
            text += "; available: " + (", ".join(self.available_credit_ids) or "none")
        return f"cannot apply a saved reset on account {self.account_id!r}: {text}"

    @property
    def data(self) -> dict[str, Any]:
        return ext.ApplyRefusedData(
            account_id=self.account_id,
            disabled_reason=self.reason,
            pending_idempotency_key=self.pending_key,
            available_credit_ids=self.available_credit_ids,
        ).model_dump(mode="json", by_alias=True)


class KeyTaken(PoolError, RequestError):
    """The idempotency key belongs to an apply on another account."""

    http_status: ClassVar[int] = 409
    http_error: ClassVar[str] = "idempotencyKeyConflict"

    def __init__(self, key: str, owner: str) -> None:
        super().__init__(f"idempotencyKey {key!r} belongs to an apply on account {owner!r}")
        self.key = key
        self.owner = owner

    @property
    def message(self) -> str:
        return f"{self}; use a new key for this account"

    @property
    def data(self) -> dict[str, Any]:
        return {ERROR_CODE: self.http_error, "idempotencyKey": self.key, "accountId": self.owner}


class ApplyBusy(PoolError, RequestError):
    """Another apply on the same upstream account held the apply lock longer than the wait allows."""

    http_status: ClassVar[int] = 409
    http_error: ClassVar[str] = "applyInProgress"

    def __init__(self, account_id: str, waited: float) -> None:
        super().__init__(f"another apply on account {account_id!r} is still running (waited {waited:g} s)")
        self.account_id = account_id
        self.waited = waited

    @property
    def message(self) -> str:
        return f"{self}; try again"

    @property
    def data(self) -> dict[str, Any]:
        return {ERROR_CODE: self.http_error, "accountId": self.account_id}


class SignInRequired(PoolError, RequestError):
    """The account cannot be read until someone signs in; the message says how. Shown in its summary."""


class GuardUnavailable(PoolError):
    """The claim cannot be taken (the marker beside the Codex home, the ledger or the lock): nothing
    was sent upstream."""

    def __init__(self, account_id: str, why: str) -> None:
        super().__init__(f"cannot record a pending apply for {account_id!r}: {why}")
        self.account_id = account_id
        self.why = why

    @property
    def message(self) -> str:
        return f"{self}; nothing was spent"


class OutcomeUnknown(PoolError):
    """`timeout` tells a timed-out consume from other ambiguous failures; `detail` is the backend's text, or
    what failed after the consume was sent (`after_consume`: the ledger could not record the outcome)."""

    http_error: ClassVar[str] = "outcomeUnknown"

    def __init__(self, account_id: str, key: str, *, timeout: bool, detail: str, after_consume: bool = False) -> None:
        super().__init__(f"consume on {account_id!r} has an unknown outcome: {detail}")
        self.account_id = account_id
        self.key = key
        self.timeout = timeout
        self.detail = detail
        self.after_consume = after_consume

    @property
    def message(self) -> str:
        resend = f"; the attempt stays pending: {RESEND} ({self.key!r})"
        if self.timeout:
            return CONSUME_TIMED_OUT + resend
        if self.after_consume:
            return f"the outcome of the apply on account {self.account_id!r} is unknown ({self.detail})" + resend
        return CONSUME_FAILED + self.detail + resend

    @property
    def data(self) -> dict[str, Any]:
        return {"accountId": self.account_id, "idempotencyKey": self.key, "outcome": UNKNOWN}


class ApplyFailed(PoolError):
    """Upstream refused the consume (a 4xx): nothing was spent."""

    def __init__(self, account_id: str, detail: str) -> None:
        super().__init__(detail)
        self.account_id = account_id
        self.detail = detail

    @property
    def message(self) -> str:
        return CONSUME_FAILED + self.detail + "; nothing was spent"


class ReadFailed(PoolError):
    """The account's usage could not be read; the message says where it went and what to do. Shown in its
    summary."""
