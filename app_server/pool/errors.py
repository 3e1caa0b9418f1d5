"""What the pool raises. The handlers turn each into a wire error (code, text, data) in one table.

PoolError
├── UnknownAccount      the id is not in the pool
├── AccountsFileError   accounts.toml cannot be used as written
├── ApplyRefused        refused before any upstream call: the reason says why
├── KeyTaken            the idempotency key belongs to an apply on another account
├── ApplyBusy           another apply on the same upstream account held the lock too long
├── GuardUnavailable    the claim cannot be taken (the marker beside the Codex home, the ledger or the
│                       database cannot be written or reached) before the consume: nothing is spent
├── OutcomeUnknown      the consume may have happened (timeout, dropped connection, 5xx, unreadable
│                       answer, or any failure after it was sent: the ledger gone, a crash of a step):
│                       the attempt stays pending, settle it by re-sending the same key
└── ApplyFailed         upstream refused the consume (a 4xx): nothing was spent
"""

from __future__ import annotations

from protocol import ext


class PoolError(Exception):
    """Base of the pool's errors."""


class AccountsFileError(PoolError):
    """accounts.toml cannot be used as written; the message says where and why."""


class UnknownAccount(PoolError):
    def __init__(self, account_id: str, known: list[str]) -> None:
        super().__init__(f"unknown account {account_id!r} (pool: {', '.join(known)})")
        self.account_id = account_id
        self.known = known


class ApplyRefused(PoolError):
    """Refused without calling upstream (or upstream proved the account cannot apply: 401, 404)."""

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


class KeyTaken(PoolError):
    def __init__(self, key: str, owner: str) -> None:
        super().__init__(f"idempotencyKey {key!r} belongs to an apply on account {owner!r}")
        self.key = key
        self.owner = owner


class ApplyBusy(PoolError):
    def __init__(self, account_id: str, waited: float) -> None:
        super().__init__(f"another apply on account {account_id!r} is still running (waited {waited:g} s)")
        self.account_id = account_id
        self.waited = waited


class GuardUnavailable(PoolError):
    def __init__(self, account_id: str, why: str) -> None:
        super().__init__(f"cannot record a pending apply for {account_id!r}: {why}")
        self.account_id = account_id
        self.why = why


class OutcomeUnknown(PoolError):
    """`timeout` tells a timed-out consume from other ambiguous failures; `detail` is the backend's text, or
    what failed after the consume was sent (`after_consume`: the ledger could not record the outcome)."""

    def __init__(self, account_id: str, key: str, *, timeout: bool, detail: str, after_consume: bool = False) -> None:
        super().__init__(f"consume on {account_id!r} has an unknown outcome: {detail}")
        self.account_id = account_id
        self.key = key
        self.timeout = timeout
        self.detail = detail
        self.after_consume = after_consume


class ApplyFailed(PoolError):
    def __init__(self, account_id: str, detail: str) -> None:
        super().__init__(detail)
        self.account_id = account_id
        self.detail = detail
