"""The storage interface the pool uses: the apply ledger, per-account claims, the per-account apply
lock, and usage history. One logic (`ledger.Ledger`) over two drivers: SQLite beside files on one machine
(the default) and PostgreSQL shared by several machines. The pool never knows which one it has.

Money-protecting state (claims, the apply lock) is keyed by `AccountKey`: the upstream account that a
consume charges, not a pool id, a data directory or a process. The claim is the lock: `start` takes the
account's claim with one atomic conditional write, refused while another key's attempt is pending, and
only settling that key (`finish`, or `fail` proving nothing was spent) releases it. The apply lock only
orders waiters; losing it can delay an apply, never let a second one through.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app_server.errors import CodexLimitsError, RequestError
from protocol.ext import AccountPoolApplyResponse, ApplyRecord, ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome


@dataclass(frozen=True)
class AccountKey:
    """The identity of the upstream account behind a Codex home.

    `identity` is `chatgpt:<account_id>:<user_id>` when auth.json names them, else `home:<real path>`;
    `home` is the Codex home it was derived from (local markers live beside it).
    """

    identity: str
    home: Path

    @property
    def digest(self) -> str:
        """A file- and SQL-safe name for the identity."""
        import hashlib  # not at start-up: only an apply needs it

        return hashlib.sha256(self.identity.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Attempt:
    """One apply attempt as recorded: its public record and, once finished, the full response."""

    record: ApplyRecord
    response: AccountPoolApplyResponse | None
    identity: str | None = None

    @property
    def status(self) -> ApplyStatus:
        return self.record.status


@dataclass(frozen=True)
class UsageSample:
    """One window of one read: what `accountPool/usageHistory` charts over time."""

    account_id: str
    limit_id: str  # "codex" for the main limits, else the additional limit's id
    window: str  # "primary" | "secondary"
    taken_at: int  # Unix seconds
    used_percent: int
    window_minutes: int | None
    resets_at: int | None


class StoreError(CodexLimitsError):
    """The store cannot be used: unreachable, malformed URL, a schema newer than this code. The message
    is safe to show (it never carries a password); it is the wire text as it is (-32603)."""


class LedgerUnusable(StoreError):
    """The SQLite ledger file cannot be opened or read (corrupt, unreadable): the message names the file and
    what to do. Nothing is ever recreated over it."""


class ClaimHeld(RequestError):
    """`start` found the upstream account claimed by another key's attempt, whose outcome is unknown.
    Nothing was written; `holder` is the key to re-send to settle that attempt. The pool answers it as
    `ApplyRefused(pendingApply)`."""

    def __init__(self, key: str, holder: str, holder_account_id: str) -> None:
        super().__init__(f"the upstream account is claimed by the pending attempt {holder!r}; {key!r} not started")
        self.key = key
        self.holder = holder
        self.holder_account_id = holder_account_id


class KeyInUse(RequestError):
    """`start` found the key already taken: by an apply on another account, or one that has finished. The pool
    answers it as `KeyTaken`."""

    def __init__(self, key: str, account_id: str, status: ApplyStatus) -> None:
        super().__init__(f"idempotency key {key!r} is {status.value} on account {account_id!r}")
        self.key = key
        self.account_id = account_id
        self.status = status


class LockTimeout(RequestError):
    """Another holder kept an account's apply lock for longer than the wait. The pool answers it as `ApplyBusy`."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"waited {waited:g} s for the apply lock")
        self.waited = waited


class Store(Protocol):
    """What the pool needs from storage. Every method is safe to call from several tasks at once."""

    async def get(self, key: str) -> Attempt | None:
        """The attempt recorded under an idempotency key, if any."""
        ...

    async def start(
        self, key: str, account: AccountKey, account_id: str, credit_id: str | None, now: int, available: int | None
    ) -> None:
        """Record the attempt as pending and claim the upstream account, durably, before the consume.

        A retry of a pending or failed key counts one more attempt and keeps the first `started_at`,
        `available_before` and identity (a `credit_id` first recorded as unknown is filled in). Raises
        `KeyInUse` when the key has finished or belongs to another account (neither the same pool id nor
        the same upstream identity), `ClaimHeld` when another key's attempt holds the account's claim.
        """
        ...

    async def finish(self, key: str, response: AccountPoolApplyResponse, available_after: int | None) -> None:
        """Record the outcome (never overwriting a recorded one) and release the key's claims."""
        ...

    async def fail(self, key: str, error: str, now: int, *, keep_pending: bool) -> None:
        """A failed call: `keep_pending` when upstream may have acted (the claim stays), else `failed`
        (proved not spent; the key's claims are released)."""
        ...

    async def history(self, account_id: str | None, limit: int) -> list[ApplyRecord]:
        """Newest first."""
        ...

    async def pending(
        self, account: AccountKey, *, exclude: str | None = None, account_id: str | None = None
    ) -> ApplyRecord | None:
        """The attempt on this upstream account whose outcome is unknown, other than `exclude`. Found
        through the claim even when the ledger row is gone (a deleted ledger loses no pending attempt).
        `account_id` also finds rows written before attempts carried an identity (by pool id)."""
        ...

    def apply_lock(self, account: AccountKey, *, wait: float) -> AbstractAsyncContextManager[None]:
        """Held for the whole apply; orders the applies on one upstream account across processes (and
        machines, for a shared store). A crashed holder releases it. Raises `LockTimeout` after `wait`
        seconds. Not what guards the money: the claim taken by `start` is."""
        ...

    async def record_usage(self, samples: list[UsageSample]) -> None: ...

    async def usage_history(self, account_id: str, *, since: int | None, limit: int) -> list[UsageSample]:
        """Oldest first."""
        ...

    async def prune_usage(self, before: int) -> int:
        """Drop samples older than `before`; returns how many."""
        ...

    async def aclose(self) -> None: ...


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def record_from_row(row: Sequence[object]) -> ApplyRecord:
    """An `ApplyRecord` from the ledger's ten public columns, in both stores' order: idempotency_key,
    account_id, credit_id, status, outcome, error, started_at, finished_at, available_before, available_after."""
    (key, account_id, credit_id, status, outcome, error, started, finished, before, after) = row[:10]
    return ApplyRecord(
        idempotency_key=str(key),
        account_id=str(account_id),
        credit_id=None if credit_id is None else str(credit_id),
        status=ApplyStatus(str(status)),
        outcome=None if outcome is None else ConsumeAccountRateLimitResetCreditOutcome(str(outcome)),
        error=None if error is None else str(error),
        started_at=int(str(started)),
        finished_at=_opt_int(finished),
        available_before=_opt_int(before),
        available_after=_opt_int(after),
    )


def attempt_from_row(row: Sequence[object]) -> Attempt:
    """An `Attempt` from those ten columns followed by response_json and identity."""
    response, identity = row[10], row[11]
    parsed = None if response is None else AccountPoolApplyResponse.model_validate_json(str(response))
    return Attempt(record_from_row(row), parsed, None if identity is None else str(identity))
