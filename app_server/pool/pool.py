"""The account pool: per-account summaries (saved resets, windows, what an operator can do) and apply.

Apply is manual and careful: a fresh read first (refused without any upstream call when it shows
no credit, an account needing re-auth, or one that cannot use resets), the upstream account claimed
(the pending ledger row, and the marker beside the Codex home) before the one consume call, refused
while another key's attempt is pending, and a fresh read after, so the caller sees what changed. Every
failure after the consume was sent answers that the outcome is unknown and names the key to re-send.
Nothing here ever applies on its own, and nothing that may have spent is retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio

from app_server.pool import summary as summaries
from app_server.pool.accounts import AccountEntry, AccountsFile, home_key
from app_server.pool.errors import (
    ApplyBusy,
    ApplyFailed,
    ApplyRefused,
    GuardUnavailable,
    KeyTaken,
    OutcomeUnknown,
    ReadFailed,
    UnknownAccount,
)
from app_server.store.base import AccountKey, ClaimHeld, KeyInUse, LockTimeout, Store, StoreError
from app_server.store.local_guard import GuardError
from app_server.upstream.account import AccountRegistry, CodexAccount, SignIn
from app_server.upstream.backend import BackendError, Caller
from protocol import ext, v2

log = logging.getLogger(__name__)

LIST_CONCURRENCY: Final = 8
APPLY_LOCK_WAIT: Final = 30.0

Identity = tuple[str, str]  # (user agent, originator) of the client the calls are made for
Notify = Callable[[ext.AccountSummary], Awaitable[object]]


@dataclass
class _Member:
    """One account of `accounts.toml`, its `CodexAccount`, and its last summary (with the order of reads)."""

    entry: AccountEntry
    account: CodexAccount
    summary: ext.AccountSummary | None = None
    fetched_at: float = 0.0
    reads_started: int = 0
    landed: int = 0  # the number (in start order) of the read whose summary is `summary`


@dataclass(frozen=True)
class _Reading:
    """A fresh summary, and the caller it was read with (None when the account could not be called)."""

    summary: ext.AccountSummary
    caller: Caller | None


@dataclass(frozen=True)
class _Apply:
    """One apply under way: the member, the upstream account it charges, what was asked and for whom."""

    member: _Member
    account: AccountKey
    params: ext.AccountPoolApplyParams
    identity: Identity
    notify: Notify

    @property
    def key(self) -> str:
        return self.params.idempotency_key

    @property
    def account_id(self) -> str:
        return self.params.account_id


@dataclass(frozen=True)
class _Ready:
    """What the checks before the claim found: the read before, the credit to spend, and who spends it."""

    before: ext.AccountSummary
    credit_id: str | None
    caller: Caller


def account_key(account: CodexAccount) -> AccountKey:
    """The upstream account a consume on this Codex home charges: the ChatGPT account and user named in
    auth.json, else the home's real path. Pending attempts and the apply lock are keyed by it."""
    return home_key(account.home, account.auth.state())


class Pool:
    """The accounts of `accounts.toml`, read and applied on through one registry and one store.

        pool = Pool(accounts_file, registry, store)
        rows = await pool.summaries(identity, max_age=None, notify=announce)
        result = await pool.apply(params, identity, announce)   # raises ApplyRefused, OutcomeUnknown, ...

    `identity` is the calling client's (user agent, originator), used for the backend calls.
    """

    def __init__(
        self, accounts: AccountsFile, registry: AccountRegistry, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.accounts_file = accounts
        self.registry = registry
        self.store = store
        self._clock = clock
        self._members: dict[str, _Member] = {}

    def _now(self) -> int:
        return int(self._clock())

    # -- membership --------------------------------------------------------------------------

    def members(self) -> list[_Member]:
        """The accounts of `accounts.toml` as it is now, each keeping its last summary while its entry is unchanged."""
        entries = self.accounts_file.entries()
        members = []
        for entry in entries:
            member = self._members.get(entry.id)
            if member is None or member.entry != entry:
                member = _Member(entry, self.registry.get(entry.codex_home))
                self._members[entry.id] = member
            members.append(member)
        return members

    def member(self, account_id: str) -> _Member:
        """The account `account_id`; raises `UnknownAccount` naming the pool's ids."""
        members = self.members()
        for member in members:
            if member.entry.id == account_id:
                return member
        raise UnknownAccount(account_id, [m.entry.id for m in members])

    # -- reading -----------------------------------------------------------------------------

    async def summaries(self, identity: Identity, max_age: float | None, notify: Notify) -> list[ext.AccountSummary]:
        """Every account's summary, in `accounts.toml` order: read afresh (a few at a time) unless younger than
        `max_age` seconds. Never spends anything."""
        members = self.members()
        results: dict[str, ext.AccountSummary] = {}
        limiter = anyio.CapacityLimiter(LIST_CONCURRENCY)
        now = time.monotonic()

        async def one(member: _Member) -> None:
            if max_age is not None and member.summary is not None and now - member.fetched_at <= max_age:
                results[member.entry.id] = member.summary
                return
            async with limiter:
                # The member itself, not a second lookup by id: an accounts.toml edited meanwhile must not
                # turn into an "unknown account" error that fails the whole list.
                results[member.entry.id] = await self._refresh(member, identity, notify)

        try:
            async with anyio.create_task_group() as tg:
                for member in members:
                    tg.start_soon(one, member)
        except ExceptionGroup as group:
            # An unusable store fails every account alike: the list answers its one clear error.
            store_errors, others = group.split(StoreError)
            if store_errors is None or others is not None:
                raise
            raise _first(store_errors) from None
        return [results[m.entry.id] for m in members]

    async def refresh(self, account_id: str, identity: Identity, notify: Notify | None) -> ext.AccountSummary:
        """Read usage and reset credits now. Never spends anything; failures land in the summary."""
        return await self._refresh(self.member(account_id), identity, notify)

    async def _refresh(
        self, member: _Member, identity: Identity, notify: Notify | None, *, running: str | None = None
    ) -> ext.AccountSummary:
        """`refresh` of a known member; `running` is the key of the apply in progress, not reported as pending."""
        return (await self._read(member, identity, notify, running=running)).summary

    async def _read(
        self, member: _Member, identity: Identity, notify: Notify | None, *, running: str | None = None
    ) -> _Reading:
        """A fresh summary of `member` (and the caller it was read with, which an apply spends with): signed in
        once, read, marked with the account's pending apply (other than `running`), then kept and announced
        unless a read that started later has landed first."""
        member.reads_started += 1
        number = member.reads_started
        caller: Caller | None = None
        try:
            sign_in = await member.account.sign_in(user_agent=identity[0], originator=identity[1])
            caller = sign_in.caller
            summary = await self._summarize(member, sign_in)
        except Exception:
            log.exception("refreshing account %r failed unexpectedly", member.entry.id)
            summary = self._summary(
                member,
                ext.AccountStatus.UNAVAILABLE,
                ext.ResetDisabledReason.UNAVAILABLE,
                error=summaries.account_error(ReadFailed("internal error while reading this account")),
            )
        pending = await self.store.pending(account_key(member.account), exclude=running, account_id=member.entry.id)
        if pending is not None:
            summary = _with_pending(summary, pending)
        if number < member.landed:
            # Reads overlap: one that started after this one has landed already (after an apply, say). Its
            # summary stays the account's, and no client is told of this older one as if it were news.
            return _Reading(summary, caller)
        member.summary = summary
        member.landed = number
        member.fetched_at = time.monotonic()
        if notify is not None:
            await notify(summary)
        return _Reading(summary, caller)

    def _summary(
        self,
        member: _Member,
        status: ext.AccountStatus,
        reason: ext.ResetDisabledReason | None,
        *,
        error: ext.AccountError | None = None,
        read: v2.GetAccountRateLimitsResponse | None = None,
        email: str | None = None,
    ) -> ext.AccountSummary:
        return summaries.summary(
            member.entry,
            member.account.auth.state(),
            status,
            reason,
            now=self._now(),
            error=error,
            read=read,
            email=email,
        )

    async def _summarize(self, member: _Member, sign_in: SignIn) -> ext.AccountSummary:
        """The summary of one read with `sign_in`; without a caller, the sign-in problem instead of a read."""
        if sign_in.caller is None:
            status, error = summaries.sign_in_problem(member.entry.codex_home, sign_in.state, expired=sign_in.expired)
            why_not = (
                ext.ResetDisabledReason.UNSUPPORTED
                if status is ext.AccountStatus.UNSUPPORTED
                else ext.ResetDisabledReason.REAUTH_REQUIRED
            )
            return self._summary(member, status, why_not, error=error)
        try:
            fetched = await member.account.fetch(sign_in.caller, details=True)
        except BackendError as failure:
            status, error = summaries.read_failure(member.entry.codex_home, member.account.backend.base_url, failure)
            why = (
                ext.ResetDisabledReason.REAUTH_REQUIRED
                if status is ext.AccountStatus.REAUTH_REQUIRED
                else ext.ResetDisabledReason.UNAVAILABLE
            )
            return self._summary(member, status, why, error=error)
        usage, details_error = fetched.usage, fetched.details_error
        read = member.account.response(fetched)
        limit_reached = usage.rate_limit is not None and usage.rate_limit.limit_reached
        exhausted = summaries.is_exhausted(read, limit_reached)
        status = ext.AccountStatus.RATE_LIMITED if exhausted else ext.AccountStatus.ACTIVE
        reason: ext.ResetDisabledReason | None = None
        if details_error is not None and details_error.status == 404:
            reason = ext.ResetDisabledReason.UNSUPPORTED
        elif read.rate_limit_reset_credits is None:
            reason = ext.ResetDisabledReason.UNAVAILABLE
        elif read.rate_limit_reset_credits.available_count <= 0:
            reason = ext.ResetDisabledReason.NO_CREDIT
        return self._summary(member, status, reason, read=read, email=usage.email)

    # -- applying ----------------------------------------------------------------------------
    #
    # Read top to bottom: `apply` takes the account's locks; `_apply_locked` runs the steps in order:
    # `_check` (the read before and every refusal), `_claim` (the pending row and the marker),
    # `_consume` (the one upstream call that spends), `_read_after` and `_settle` (the ledger row finished
    # with the read after in it, so a re-sent key replays exactly this answer).

    async def apply(
        self, params: ext.AccountPoolApplyParams, identity: Identity, notify: Notify
    ) -> ext.AccountPoolApplyResponse:
        """Apply one saved reset on `params.account_id`, at most once per idempotency key (see the module)."""
        member = self.member(params.account_id)
        job = _Apply(member, account_key(member.account), params, identity, notify)
        try:
            recorded = await self._recorded(job)
            if recorded is not None:
                return recorded
            # The account's FIFO queue is shared with the upstream consume method; the store's lock orders
            # applies across processes (and machines, for a shared store) per upstream account. The claim
            # taken by `store.start` is what lets one attempt at a time spend.
            async with member.account.spend_lock, self.store.apply_lock(job.account, wait=APPLY_LOCK_WAIT):
                return await self._apply_locked(job)
        except LockTimeout as timeout:
            raise ApplyBusy(job.account_id, timeout.waited) from None
        except (GuardError, StoreError) as problem:
            # Only before the consume: every failure after it is an OutcomeUnknown (see `_consume`, `_settle`).
            raise GuardUnavailable(job.account_id, str(problem)) from None

    async def _apply_locked(self, job: _Apply) -> ext.AccountPoolApplyResponse:
        """The steps of an apply, under the account's locks; each step raises what refuses or ends it."""
        # Another process may have finished this key while we waited for the lock.
        recorded = await self._recorded(job)
        if recorded is not None:
            return recorded
        ready = await self._check(job)
        finished = await self._claim(job, ready)
        if finished is not None:
            return finished
        outcome = await self._consume(job, ready)
        response = ext.AccountPoolApplyResponse(
            outcome=outcome, before=ready.before, after=None, applied_at=self._now(), replayed=False
        )
        # The outcome is known now: it is recorded whatever happens to the read after it (a failure,
        # or a cancellation at shutdown), so a re-sent key replays it instead of asking upstream again.
        try:
            response = await self._read_after(job, response)
        finally:
            await self._settle(job, response)
        return response

    async def _recorded(self, job: _Apply) -> ext.AccountPoolApplyResponse | None:
        """The finished answer of the key, replayed; None if it has none yet. A key belongs to its upstream
        account: any pool id on the same identity may re-send it."""
        attempt = await self.store.get(job.key)
        if attempt is None:
            return None
        if attempt.record.account_id != job.account_id and attempt.identity != job.account.identity:
            raise KeyTaken(job.key, attempt.record.account_id)
        if attempt.status is ext.ApplyStatus.FINISHED and attempt.response is not None:
            return attempt.response.model_copy(update={"replayed": True})
        return None

    async def _check(self, job: _Apply) -> _Ready:
        """Step 1, the read before: raises `ApplyRefused` unless the account can spend a credit now, and picks
        the credit. Only a pending key may have spent its credit already: it is the one attempt that may be
        re-sent, and then its credit is asked for again, so upstream answers idempotently."""
        pending = await self.store.pending(job.account, account_id=job.account_id)
        retried = pending if pending is not None and pending.idempotency_key == job.key else None
        reading = await self._read(job.member, job.identity, job.notify, running=job.key if retried else None)
        before = reading.summary
        reason = before.reset_action.disabled_reason
        if reason is ext.ResetDisabledReason.PENDING_APPLY or (pending is not None and retried is None):
            pending_key = pending.idempotency_key if pending is not None else None
            raise ApplyRefused(job.account_id, ext.ResetDisabledReason.PENDING_APPLY, pending_key=pending_key)
        if reason is not None and not (retried is not None and reason is ext.ResetDisabledReason.NO_CREDIT):
            raise ApplyRefused(job.account_id, reason)
        if reading.caller is None:  # a read without a caller is never ready (its reason says why)
            raise ApplyRefused(job.account_id, reason or ext.ResetDisabledReason.UNAVAILABLE)
        if retried is not None:
            credit_id = job.params.credit_id or retried.credit_id
        else:
            credit_id = _credit_to_spend(job.account_id, before, job.params.credit_id)
        return _Ready(before, credit_id, reading.caller)

    async def _claim(self, job: _Apply, ready: _Ready) -> ext.AccountPoolApplyResponse | None:
        """Step 2, the claim: the pending ledger row (and the marker beside the Codex home) that lets this one
        attempt spend. Refused while another key's attempt on this upstream account is pending, whoever holds
        (or lost) the apply lock. None once claimed; the recorded answer when another process finished this
        very key meanwhile."""
        available = ready.before.reset_credits.available_count if ready.before.reset_credits else None
        try:
            await self.store.start(job.key, job.account, job.account_id, ready.credit_id, self._now(), available)
        except ClaimHeld as held:
            raise ApplyRefused(job.account_id, ext.ResetDisabledReason.PENDING_APPLY, pending_key=held.holder) from None
        except KeyInUse as taken:
            # Claimed meanwhile: for another account by a concurrent apply, or finished by another process.
            if taken.account_id != job.account_id:
                raise KeyTaken(job.key, taken.account_id) from None
            recorded = await self._recorded(job)
            if recorded is None:
                raise
            return recorded
        return None

    async def _consume(self, job: _Apply, ready: _Ready) -> v2.ConsumeAccountRateLimitResetCreditOutcome:
        """Step 3, the one upstream call that spends. From here on every failure (the ledger gone, a disk full,
        a crash of any step) answers `OutcomeUnknown` naming the key; the claim stays until it is re-sent."""
        try:
            return await job.member.account.consume(ready.caller, job.key, ready.credit_id)
        except BackendError as exc:
            raise await self._consume_failed(job.account_id, job.key, exc) from None
        except Exception as exc:
            log.exception("apply %r on %r failed after the consume was sent", job.key, job.account_id)
            await self._keep_pending(job.key, f"interrupted: {type(exc).__name__}; outcome unknown")
            raise OutcomeUnknown(job.account_id, job.key, timeout=False, detail=_why(exc), after_consume=True) from None
        except BaseException:
            await self._keep_pending(job.key, "interrupted; outcome unknown")
            raise

    async def _read_after(self, job: _Apply, response: ext.AccountPoolApplyResponse) -> ext.AccountPoolApplyResponse:
        """Step 4, the read after, so the caller sees what changed: `response` with it, or as it was when the
        read fails (the apply's outcome stands)."""
        try:
            after = await self._refresh(job.member, job.identity, job.notify, running=job.key)
        except Exception:
            log.exception("read after apply on %r failed", job.account_id)
            return response
        if after.status is ext.AccountStatus.UNAVAILABLE:
            log.warning("read after apply on %r failed: %s", job.account_id, after.error)
        return response.model_copy(update={"after": after})

    async def _settle(self, job: _Apply, response: ext.AccountPoolApplyResponse) -> None:
        """Step 5, the settle: the ledger row finished with `response`, releasing the claim; shielded, so a
        cancellation at shutdown still records it. A ledger that cannot record it: `OutcomeUnknown`."""
        after = response.after
        available_after = after.reset_credits.available_count if after is not None and after.reset_credits else None
        with anyio.CancelScope(shield=True):
            try:
                await self.store.finish(job.key, response, available_after)
            except Exception as exc:
                outcome = response.outcome.value
                log.error(
                    "apply %r on %r: upstream answered %s but the ledger failed: %s",
                    job.key,
                    job.account_id,
                    outcome,
                    exc,
                )
                raise OutcomeUnknown(
                    job.account_id,
                    job.key,
                    timeout=False,
                    detail=f"upstream answered {outcome}, but it could not be recorded: {_why(exc)}",
                    after_consume=True,
                ) from None

    async def _keep_pending(self, key: str, why: str) -> None:
        """Best effort: the claim and the pending row stay whatever this write does."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store.fail(key, why, self._now(), keep_pending=True)
            except Exception as exc:
                log.warning("could not note %r as interrupted (it stays pending): %s", key, exc)

    async def _consume_failed(self, account_id: str, key: str, exc: BackendError) -> Exception:
        """Record the failure and say what it means. Only what proves upstream did not act finishes the
        attempt as failed: a 4xx, a redirect (not followed), a config.toml that stopped the call before it
        was sent. A 5xx (a gateway's 502/503/504 in particular), a timeout, a dropped connection, an
        oversized or unreadable 2xx may come after upstream acted: the attempt stays pending. A ledger that
        cannot record the failure leaves the attempt pending too (its claim stays): unknown, re-send it."""
        definite = exc.kind in ("redirect", "config") or (
            exc.kind == "status" and exc.status is not None and 300 <= exc.status < 500
        )
        if not definite:
            message = "consume timed out; outcome unknown" if exc.kind == "timeout" else exc.detail
            await self._keep_pending(key, message)
            return OutcomeUnknown(account_id, key, timeout=exc.kind == "timeout", detail=exc.detail)
        try:
            await self.store.fail(key, exc.detail, self._now(), keep_pending=False)
        except Exception as failure:
            detail = f"upstream refused ({exc.detail}), but the ledger could not record it: {_why(failure)}"
            return OutcomeUnknown(account_id, key, timeout=False, detail=detail, after_consume=True)
        if exc.status == 401:
            return ApplyRefused(account_id, ext.ResetDisabledReason.REAUTH_REQUIRED)
        if exc.status == 404:
            return ApplyRefused(account_id, ext.ResetDisabledReason.UNSUPPORTED)
        return ApplyFailed(account_id, exc.detail)

    async def history(self, account_id: str | None, limit: int) -> list[ext.ApplyRecord]:
        """The ledger of applies, newest first, for one account (checked to exist) or all."""
        if account_id is not None:
            self.member(account_id)
        return await self.store.history(account_id, limit)

    @property
    def data_home(self) -> Path:
        """The data directory `accounts.toml` lives in."""
        return self.accounts_file.path.parent


def _with_pending(summary: ext.AccountSummary, pending: ext.ApplyRecord) -> ext.AccountSummary:
    """`summary` showing the account's pending apply; it cannot apply again until that key is settled."""
    action = summary.reset_action
    if action.disabled_reason in (None, ext.ResetDisabledReason.NO_CREDIT):
        # The pending attempt may have spent the credit that is missing; settle it first.
        action = action.model_copy(
            update={"enabled": False, "disabled_reason": ext.ResetDisabledReason.PENDING_APPLY, "readiness": None}
        )
    return summary.model_copy(
        update={
            "reset_action": action,
            "pending_apply": ext.PendingApply(
                idempotency_key=pending.idempotency_key, credit_id=pending.credit_id, started_at=pending.started_at
            ),
        }
    )


def _credit_to_spend(account_id: str, before: ext.AccountSummary, asked: str | None) -> str | None:
    """The credit a new apply spends: the one asked for, refused unless the read before lists it available;
    else the pool's choice (`summary.credit_to_spend`)."""
    listed = before.reset_credits.credits if before.reset_credits is not None else None
    if asked is None or listed is None:
        return summaries.credit_to_spend(before, asked)
    available = [c.id for c in listed if c.status is v2.RateLimitResetCreditStatus.AVAILABLE]
    if asked not in available:
        known = {c.id for c in listed}
        reason = ext.ResetDisabledReason.NO_CREDIT if asked in known else ext.ResetDisabledReason.UNKNOWN_CREDIT
        raise ApplyRefused(account_id, reason, available_credit_ids=available)
    return asked


def _why(exc: BaseException) -> str:
    """A failure in a few words: a store's message is written to be shown; anything else by its type."""
    if isinstance(exc, (StoreError, GuardError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first(group: BaseExceptionGroup[StoreError]) -> StoreError:
    first = group.exceptions[0]
    return first if isinstance(first, StoreError) else _first(first)
