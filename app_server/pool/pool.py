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
from typing import Any, Final

import anyio

from app_server.pool import summary as summaries
from app_server.pool.accounts import AccountEntry, AccountsFile
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
from app_server.upstream.account import AccountRegistry, CodexAccount, auth_error
from app_server.upstream.auth import AuthKind, AuthState
from app_server.upstream.backend import BackendError, Caller
from app_server.upstream.errors import Purpose
from protocol import ext, v2

log = logging.getLogger(__name__)

LIST_CONCURRENCY: Final = 8
APPLY_LOCK_WAIT: Final = 30.0

Identity = tuple[str, str]  # (user agent, originator) of the client the calls are made for
Notify = Callable[[ext.AccountSummary], Awaitable[object]]


@dataclass
class _Member:
    entry: AccountEntry
    account: CodexAccount
    summary: ext.AccountSummary | None = None
    fetched_at: float = 0.0
    reads_started: int = 0
    landed: int = 0  # the number (in start order) of the read whose summary is `summary`


def account_key(account: CodexAccount) -> AccountKey:
    """The upstream account a consume on this Codex home charges: the ChatGPT account and user named in
    auth.json, else the home's real path. Pending attempts and the apply lock are keyed by it."""
    return _key(account.home, account.auth.state())


def home_identity(home: Path) -> str:
    """`account_key(...).identity` of a Codex home, from its auth.json alone (no backend, no refresh)."""
    from app_server.upstream.auth import AuthStore

    def no_client() -> Any:
        raise RuntimeError("reading an identity makes no HTTP call")

    return _key(home, AuthStore(home, refresh_url="", client=no_client).state()).identity


def _key(home: Path, state: AuthState) -> AccountKey:
    creds = state.credentials
    if creds is not None and (creds.account_id or creds.user_id):
        return AccountKey(f"chatgpt:{creds.account_id or ''}:{creds.user_id or ''}", home)
    return AccountKey(f"home:{home.resolve()}", home)


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
        members = self.members()
        for member in members:
            if member.entry.id == account_id:
                return member
        raise UnknownAccount(account_id, [m.entry.id for m in members])

    # -- reading -----------------------------------------------------------------------------

    async def summaries(self, identity: Identity, max_age: float | None, notify: Notify) -> list[ext.AccountSummary]:
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
        member.reads_started += 1
        number = member.reads_started
        try:
            summary = await self._summarize(member, identity)
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
            action = summary.reset_action
            if action.disabled_reason in (None, ext.ResetDisabledReason.NO_CREDIT):
                # The pending attempt may have spent the credit that is missing; settle it first.
                action = action.model_copy(
                    update={
                        "enabled": False,
                        "disabled_reason": ext.ResetDisabledReason.PENDING_APPLY,
                        "readiness": None,
                    }
                )
            summary = summary.model_copy(
                update={
                    "reset_action": action,
                    "pending_apply": ext.PendingApply(
                        idempotency_key=pending.idempotency_key,
                        credit_id=pending.credit_id,
                        started_at=pending.started_at,
                    ),
                }
            )
        if number < member.landed:
            # Reads overlap: one that started after this one has landed already (after an apply, say). Its
            # summary stays the account's, and no client is told of this older one as if it were news.
            return summary
        member.summary = summary
        member.landed = number
        member.fetched_at = time.monotonic()
        if notify is not None:
            await notify(summary)
        return summary

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

    async def _caller(self, member: _Member, identity: Identity) -> Caller | ext.AccountSummary:
        """The identity to call with, or the summary explaining why there is none."""
        auth = member.account.auth
        state = auth.state()
        if state.kind is AuthKind.NONE or (state.kind is AuthKind.CHATGPT and state.credentials is None):
            state = auth.reload()  # the operator may have run `codex login` since
        home = member.entry.codex_home
        if auth_error(state, Purpose.READ) is not None:
            status, error = summaries.sign_in_problem(home, state, expired=False)
            reason = (
                ext.ResetDisabledReason.UNSUPPORTED
                if status is ext.AccountStatus.UNSUPPORTED
                else ext.ResetDisabledReason.REAUTH_REQUIRED
            )
            return self._summary(member, status, reason, error=error)
        user_agent, originator = identity
        state = await auth.ensure_fresh(user_agent=user_agent, originator=originator)
        if state.reauth_required or state.credentials is None:
            status, error = summaries.sign_in_problem(home, state, expired=True)
            return self._summary(member, status, ext.ResetDisabledReason.REAUTH_REQUIRED, error=error)
        creds = state.credentials
        return Caller(user_agent, creds.access_token, creds.account_id, creds.fedramp)

    async def _summarize(self, member: _Member, identity: Identity) -> ext.AccountSummary:
        caller = await self._caller(member, identity)
        if isinstance(caller, ext.AccountSummary):
            return caller
        try:
            fetched = await member.account.fetch(caller, details=True)
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

    async def apply(
        self, params: ext.AccountPoolApplyParams, identity: Identity, notify: Notify
    ) -> ext.AccountPoolApplyResponse:
        member = self.member(params.account_id)
        key = account_key(member.account)
        try:
            recorded = await self._recorded(params.idempotency_key, params.account_id, key)
            if recorded is not None:
                return recorded
            # The account's FIFO queue is shared with the upstream consume method; the store's lock orders
            # applies across processes (and machines, for a shared store) per upstream account. The claim
            # taken by `store.start` is what lets one attempt at a time spend.
            async with member.account.spend_lock, self.store.apply_lock(key, wait=APPLY_LOCK_WAIT):
                return await self._apply_locked(member, key, params, identity, notify)
        except LockTimeout as timeout:
            raise ApplyBusy(params.account_id, timeout.waited) from None
        except (GuardError, StoreError) as problem:
            # Only before the consume: every failure after it is an OutcomeUnknown (see `_spend`).
            raise GuardUnavailable(params.account_id, str(problem)) from None

    async def _recorded(self, key: str, account_id: str, account: AccountKey) -> ext.AccountPoolApplyResponse | None:
        """The finished answer of `key`, replayed; None if it has none yet. A key belongs to its upstream
        account: any pool id on the same identity may re-send it."""
        attempt = await self.store.get(key)
        if attempt is None:
            return None
        if attempt.record.account_id != account_id and attempt.identity != account.identity:
            raise KeyTaken(key, attempt.record.account_id)
        if attempt.status is ext.ApplyStatus.FINISHED and attempt.response is not None:
            return attempt.response.model_copy(update={"replayed": True})
        return None

    async def _apply_locked(
        self,
        member: _Member,
        account: AccountKey,
        params: ext.AccountPoolApplyParams,
        identity: Identity,
        notify: Notify,
    ) -> ext.AccountPoolApplyResponse:
        key = params.idempotency_key
        account_id = params.account_id
        # Another process may have finished this key while we waited for the lock.
        recorded = await self._recorded(key, account_id, account)
        if recorded is not None:
            return recorded
        # Only a pending key may have spent its credit already: it is the one attempt that may be re-sent.
        pending = await self.store.pending(account, account_id=account_id)
        retrying = pending is not None and pending.idempotency_key == key
        before = await self._refresh(member, identity, notify, running=key if retrying else None)
        reason = before.reset_action.disabled_reason
        if reason is ext.ResetDisabledReason.PENDING_APPLY or (pending is not None and not retrying):
            raise ApplyRefused(
                account_id,
                ext.ResetDisabledReason.PENDING_APPLY,
                pending_key=pending.idempotency_key if pending is not None else None,
            )
        # A pending key may already have spent its credit: re-send it so upstream answers idempotently.
        if reason is not None and not (retrying and reason is ext.ResetDisabledReason.NO_CREDIT):
            raise ApplyRefused(account_id, reason)
        credit_id = params.credit_id
        if retrying and pending is not None:
            credit_id = credit_id or pending.credit_id
        elif credit_id is not None and before.reset_credits is not None and before.reset_credits.credits is not None:
            listed = before.reset_credits.credits
            available = [c.id for c in listed if c.status is v2.RateLimitResetCreditStatus.AVAILABLE]
            if credit_id not in available:
                known = {c.id for c in listed}
                raise ApplyRefused(
                    account_id,
                    ext.ResetDisabledReason.NO_CREDIT if credit_id in known else ext.ResetDisabledReason.UNKNOWN_CREDIT,
                    available_credit_ids=available,
                )
        else:
            credit_id = summaries.credit_to_spend(before, credit_id)
        caller = await self._caller(member, identity)
        if isinstance(caller, ext.AccountSummary):
            raise ApplyRefused(account_id, caller.reset_action.disabled_reason or ext.ResetDisabledReason.UNAVAILABLE)
        available_before = before.reset_credits.available_count if before.reset_credits else None
        try:
            # The claim: refused while another key's attempt on this upstream account is pending, whoever
            # holds (or lost) the apply lock.
            await self.store.start(key, account, account_id, credit_id, self._now(), available_before)
        except ClaimHeld as held:
            raise ApplyRefused(account_id, ext.ResetDisabledReason.PENDING_APPLY, pending_key=held.holder) from None
        except KeyInUse as taken:
            # Claimed meanwhile: for another account by a concurrent apply, or finished by another process.
            if taken.account_id != account_id:
                raise KeyTaken(key, taken.account_id) from None
            recorded = await self._recorded(key, account_id, account)
            if recorded is None:
                raise
            return recorded
        return await self._spend(member, caller, key, account_id, credit_id, before, identity, notify)

    async def _spend(
        self,
        member: _Member,
        caller: Caller,
        key: str,
        account_id: str,
        credit_id: str | None,
        before: ext.AccountSummary,
        identity: Identity,
        notify: Notify,
    ) -> ext.AccountPoolApplyResponse:
        """The consume and what follows it. From here on every failure (the ledger gone, a disk full, a crash
        of any step) answers `OutcomeUnknown` naming the key; the claim stays until that key is re-sent."""
        try:
            outcome = await member.account.consume(caller, key, credit_id)
        except BackendError as exc:
            raise await self._consume_failed(account_id, key, exc) from None
        except Exception as exc:
            log.exception("apply %r on %r failed after the consume was sent", key, account_id)
            await self._keep_pending(key, f"interrupted: {type(exc).__name__}; outcome unknown")
            raise OutcomeUnknown(account_id, key, timeout=False, detail=_why(exc), after_consume=True) from None
        except BaseException:
            await self._keep_pending(key, "interrupted; outcome unknown")
            raise
        response = ext.AccountPoolApplyResponse(
            outcome=outcome, before=before, after=None, applied_at=self._now(), replayed=False
        )
        # The outcome is known now: it is recorded whatever happens to the read after it (a failure,
        # or a cancellation at shutdown), so a re-sent key replays it instead of asking upstream again.
        try:
            after = await self._refresh(member, identity, notify, running=key)
        except Exception:
            log.exception("read after apply on %r failed", account_id)
        else:
            if after.status is ext.AccountStatus.UNAVAILABLE:
                log.warning("read after apply on %r failed: %s", account_id, after.error)
            response = response.model_copy(update={"after": after})
        finally:
            available_after = (
                response.after.reset_credits.available_count
                if response.after is not None and response.after.reset_credits is not None
                else None
            )
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.finish(key, response, available_after)
                except Exception as exc:
                    log.error(
                        "apply %r on %r: upstream answered %s but the ledger failed: %s",
                        key,
                        account_id,
                        outcome.value,
                        exc,
                    )
                    raise OutcomeUnknown(
                        account_id,
                        key,
                        timeout=False,
                        detail=f"upstream answered {outcome.value}, but it could not be recorded: {_why(exc)}",
                        after_consume=True,
                    ) from None
        return response

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
        if account_id is not None:
            self.member(account_id)
        return await self.store.history(account_id, limit)

    @property
    def data_home(self) -> Path:
        return self.accounts_file.path.parent


def _why(exc: BaseException) -> str:
    """A failure in a few words: a store's message is written to be shown; anything else by its type."""
    if isinstance(exc, (StoreError, GuardError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first(group: BaseExceptionGroup[StoreError]) -> StoreError:
    first = group.exceptions[0]
    return first if isinstance(first, StoreError) else _first(first)
