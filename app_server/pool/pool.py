"""The account pool: per-account summaries (saved resets, windows, what an operator can do) and apply.

Apply is manual and careful: a fresh read first (refused without any upstream call when it shows
no credit, an account needing re-auth, or one that cannot use resets), the attempt recorded in
the ledger before the one consume call, one apply at a time per account across processes, and a
fresh read after, so the caller sees what changed. Nothing here ever applies on its own.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import filelock

from app_server.pool.accounts import FILE_NAME, AccountEntry, AccountsFile, AccountsFileError
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from app_server.store.sqlite import KeyInUse, Ledger
from app_server.upstream.account import CodexAccount, Purpose, auth_error
from app_server.upstream.auth import AuthKind
from app_server.upstream.backend import BackendError, Caller
from protocol import ext, v2
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError

if TYPE_CHECKING:
    from app_server.services import Services

log = logging.getLogger(__name__)

LIST_CONCURRENCY: Final = 8
APPLY_LOCK_WAIT: Final = 30.0

_REASON_TEXT: Final = {
    ext.ResetDisabledReason.NO_CREDIT: "it has no saved reset available",
    ext.ResetDisabledReason.REAUTH_REQUIRED: "it needs to sign in again (`codex login` with its CODEX_HOME)",
    ext.ResetDisabledReason.UNSUPPORTED: "it cannot use saved resets",
    ext.ResetDisabledReason.UNAVAILABLE: "its usage could not be read just now",
    ext.ResetDisabledReason.PENDING_APPLY: "an earlier apply has an unknown outcome; re-send its idempotencyKey "
    "to settle it before starting a new one",
}

_RESEND: Final = "re-send the same idempotencyKey to learn its outcome (it will not spend a second reset)"

Identity = tuple[str, str]  # (user agent, originator)
Notify = Callable[[ext.AccountSummary], Awaitable[None]]


@dataclass
class _Member:
    entry: AccountEntry
    account: CodexAccount
    summary: ext.AccountSummary | None = None
    fetched_at: float = 0.0


def refused(account_id: str, reason: ext.ResetDisabledReason, pending_key: str | None = None) -> RpcError:
    text = _REASON_TEXT[reason] + (f" ({pending_key!r})" if pending_key is not None else "")
    return RpcError(
        INVALID_REQUEST,
        f"cannot apply a saved reset on account {account_id!r}: {text}",
        ext.ApplyRefusedData(account_id=account_id, disabled_reason=reason, pending_idempotency_key=pending_key),
    )


class Pool:
    def __init__(self, services: Services) -> None:
        self._services = services
        settings = services.settings
        self.data_home: Path = settings.data_home
        self.accounts_file = AccountsFile(self.data_home / FILE_NAME, settings.codex_home)
        self.ledger = Ledger(self.data_home / LEDGER_FILE)
        self._members: dict[str, _Member] = {}

    def close(self) -> None:
        self.ledger.close()

    # -- membership --------------------------------------------------------------------------

    def members(self) -> list[_Member]:
        try:
            entries = self.accounts_file.entries()
        except AccountsFileError as exc:
            raise RpcError(INVALID_REQUEST, str(exc)) from None
        members = []
        for entry in entries:
            member = self._members.get(entry.id)
            if member is None or member.entry != entry:
                account = (
                    self._services.default_account()
                    if entry.codex_home == self._services.settings.codex_home
                    else CodexAccount(entry.codex_home, self._services.settings, self._services.http)
                )
                member = _Member(entry, account)
                self._members[entry.id] = member
            members.append(member)
        return members

    def member(self, account_id: str) -> _Member:
        for member in self.members():
            if member.entry.id == account_id:
                return member
        known = ", ".join(m.entry.id for m in self.members())
        raise RpcError(INVALID_REQUEST, f"unknown account {account_id!r} (pool: {known})")

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

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(one, member)
        return [results[m.entry.id] for m in members]

    async def refresh(self, account_id: str, identity: Identity, notify: Notify | None) -> ext.AccountSummary:
        """Read usage and reset credits now. Never spends anything; failures land in the summary."""
        return await self._refresh(self.member(account_id), identity, notify)

    async def _refresh(
        self, member: _Member, identity: Identity, notify: Notify | None, *, running: str | None = None
    ) -> ext.AccountSummary:
        """`refresh` of a known member; `running` is the key of the apply in progress, not reported as pending."""
        account_id = member.entry.id
        try:
            summary = await self._summarize(member, identity)
        except Exception:
            log.exception("refreshing account %r failed unexpectedly", account_id)
            summary = self._summary(
                member,
                ext.AccountStatus.UNAVAILABLE,
                ext.ResetDisabledReason.UNAVAILABLE,
                error=ext.AccountError(code=INTERNAL_ERROR, message="internal error while reading this account"),
            )
        pending = await self.ledger.pending(account_id, exclude=running)
        if pending is not None:
            action = summary.reset_action
            if action.disabled_reason in (None, ext.ResetDisabledReason.NO_CREDIT):
                # The pending attempt may have spent the credit that is missing; settle it first.
                action = action.model_copy(
                    update={"enabled": False, "disabled_reason": ext.ResetDisabledReason.PENDING_APPLY}
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
        member.summary = summary
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
        creds = member.account.auth.state().credentials
        credits = read.rate_limit_reset_credits if read is not None else None
        overview = None
        if credits is not None:
            expiries = [
                c.expires_at
                for c in credits.credits or ()
                if c.expires_at is not None and c.status is v2.RateLimitResetCreditStatus.AVAILABLE
            ]
            overview = ext.ResetCreditsOverview(
                available_count=credits.available_count,
                credits=credits.credits,
                nearest_expires_at=min(expiries) if expiries else None,
            )
        plan = read.rate_limits.plan_type if read is not None else None
        if plan is None and creds is not None and creds.plan_type:
            from app_server.upstream.mapping import plan_type

            plan = plan_type(creds.plan_type)
        return ext.AccountSummary(
            account_id=member.entry.id,
            label=member.entry.label,
            codex_home=str(member.entry.codex_home),
            email=email or (creds.email if creds is not None else None),
            plan_type=plan,
            status=status,
            rate_limits=read.rate_limits if read is not None else None,
            rate_limits_by_limit_id=read.rate_limits_by_limit_id if read is not None else None,
            reset_credits=overview,
            reset_action=ext.ResetAction(enabled=reason is None, disabled_reason=reason, warning=ext.APPLY_WARNING),
            refreshed_at=int(time.time()),
            error=error,
        )

    async def _caller(self, member: _Member, identity: Identity) -> Caller | ext.AccountSummary:
        """The identity to call with, or the summary explaining why there is none."""
        auth = member.account.auth
        state = auth.state()
        if state.kind is AuthKind.NONE or (state.kind is AuthKind.CHATGPT and state.credentials is None):
            state = auth.reload()  # the operator may have run `codex login` since
        problem = auth_error(state, Purpose.READ)
        if problem is not None:
            if state.kind is AuthKind.API_KEY:
                return self._summary(
                    member,
                    ext.AccountStatus.UNSUPPORTED,
                    ext.ResetDisabledReason.UNSUPPORTED,
                    error=ext.AccountError(code=problem.code, message=problem.message),
                )
            return self._summary(
                member,
                ext.AccountStatus.REAUTH_REQUIRED,
                ext.ResetDisabledReason.REAUTH_REQUIRED,
                error=ext.AccountError(code=problem.code, message=problem.message),
            )
        user_agent, originator = identity
        state = await auth.ensure_fresh(user_agent=user_agent, originator=originator)
        if state.reauth_required or state.credentials is None:
            return self._summary(
                member,
                ext.AccountStatus.REAUTH_REQUIRED,
                ext.ResetDisabledReason.REAUTH_REQUIRED,
                error=ext.AccountError(
                    code=INVALID_REQUEST,
                    message=f"the saved sign-in expired; run `CODEX_HOME={member.entry.codex_home} codex login`",
                ),
            )
        creds = state.credentials
        return Caller(user_agent, creds.access_token, creds.account_id, creds.fedramp)

    async def _summarize(self, member: _Member, identity: Identity) -> ext.AccountSummary:
        caller = await self._caller(member, identity)
        if isinstance(caller, ext.AccountSummary):
            return caller
        try:
            fetched = await member.account.fetch(caller, details=True)
        except BackendError as failure:
            error = ext.AccountError(
                code=INTERNAL_ERROR, message="failed to fetch codex rate limits: " + failure.detail
            )
            if failure.status == 401:
                return self._summary(
                    member, ext.AccountStatus.REAUTH_REQUIRED, ext.ResetDisabledReason.REAUTH_REQUIRED, error=error
                )
            return self._summary(
                member, ext.AccountStatus.UNAVAILABLE, ext.ResetDisabledReason.UNAVAILABLE, error=error
            )
        usage, details_error = fetched.usage, fetched.details_error
        read = member.account.response(fetched)
        status = ext.AccountStatus.ACTIVE
        windows = [w for w in (read.rate_limits.primary, read.rate_limits.secondary) if w is not None]
        if (usage.rate_limit is not None and usage.rate_limit.limit_reached) or any(
            w.used_percent >= 100 for w in windows
        ):
            status = ext.AccountStatus.RATE_LIMITED
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
        key = params.idempotency_key
        recorded = await self._recorded(key, params.account_id)
        if recorded is not None:
            return recorded
        spend_lock = self._services.spend_lock(str(member.account.home))
        lock_path = self.lock_path(member.account.home)
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file_lock = filelock.FileLock(str(lock_path))
        async with spend_lock:
            await self._acquire(file_lock, params.account_id)
            try:
                return await self._apply_locked(member, params, identity, notify)
            finally:
                file_lock.release()

    def lock_path(self, codex_home: Path) -> Path:
        """The cross-process apply lock of one Codex home. Named after the home, not the pool id: two ids
        for the same home (say `default` and an entry for `~/.codex`) are one account and share it."""
        digest = hashlib.sha256(str(codex_home.resolve()).encode("utf-8")).hexdigest()[:24]
        return self.data_home / "locks" / f"home-{digest}.lock"

    @staticmethod
    def _key_taken(key: str, owner: str) -> RpcError:
        return RpcError(
            INVALID_REQUEST,
            f"idempotencyKey {key!r} belongs to an apply on account {owner!r}; use a new key for this account",
        )

    async def _recorded(self, key: str, account_id: str) -> ext.AccountPoolApplyResponse | None:
        attempt = await self.ledger.get(key)
        if attempt is None:
            return None
        if attempt.record.account_id != account_id:
            raise self._key_taken(key, attempt.record.account_id)
        if attempt.status is ext.ApplyStatus.FINISHED and attempt.response is not None:
            return attempt.response.model_copy(update={"replayed": True})
        return None

    async def _acquire(self, lock: filelock.FileLock, account_id: str) -> None:
        # Poll rather than block: the event loop keeps serving while another process applies.
        with anyio.move_on_after(APPLY_LOCK_WAIT):
            while True:
                try:
                    lock.acquire(timeout=0)
                    return
                except filelock.Timeout:
                    await anyio.sleep(0.05)
        raise RpcError(
            INVALID_REQUEST,
            f"another apply on account {account_id!r} is still running (waited {APPLY_LOCK_WAIT:g} s); try again",
        )

    async def _apply_locked(
        self, member: _Member, params: ext.AccountPoolApplyParams, identity: Identity, notify: Notify
    ) -> ext.AccountPoolApplyResponse:
        key = params.idempotency_key
        account_id = params.account_id
        # Another process may have finished this key while we waited for the lock.
        recorded = await self._recorded(key, account_id)
        if recorded is not None:
            return recorded
        # Only a pending key may have spent its credit already; a failed one was refused by upstream.
        attempt = await self.ledger.get(key)
        retrying = attempt is not None and attempt.status is ext.ApplyStatus.PENDING
        before = await self._refresh(member, identity, notify, running=key)
        reason = before.reset_action.disabled_reason
        # A pending key may already have spent its credit: re-send it so upstream answers idempotently.
        if reason is not None and not (retrying and reason is ext.ResetDisabledReason.NO_CREDIT):
            pending = before.pending_apply.idempotency_key if before.pending_apply else None
            raise refused(account_id, reason, pending if reason is ext.ResetDisabledReason.PENDING_APPLY else None)
        if params.credit_id is not None and not retrying and before.reset_credits is not None:
            listed = before.reset_credits.credits
            if listed is not None and all(
                c.id != params.credit_id or c.status is not v2.RateLimitResetCreditStatus.AVAILABLE for c in listed
            ):
                raise refused(account_id, ext.ResetDisabledReason.NO_CREDIT)
        caller = await self._caller(member, identity)
        if isinstance(caller, ext.AccountSummary):
            raise refused(account_id, caller.reset_action.disabled_reason or ext.ResetDisabledReason.UNAVAILABLE)
        available_before = before.reset_credits.available_count if before.reset_credits else None
        try:
            await self.ledger.start(key, account_id, params.credit_id, int(time.time()), available_before)
        except KeyInUse as taken:
            # Claimed meanwhile: for another account by a concurrent apply, or finished by another process.
            if taken.account_id != account_id:
                raise self._key_taken(key, taken.account_id) from None
            recorded = await self._recorded(key, account_id)
            if recorded is None:
                raise
            return recorded
        try:
            outcome = await member.account.consume(caller, key, params.credit_id)
        except BackendError as exc:
            await self._record_failure(key, exc)
            raise self._apply_error(account_id, exc) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.ledger.fail(key, "interrupted; outcome unknown", int(time.time()), keep_pending=True)
            raise
        applied_at = int(time.time())
        response = ext.AccountPoolApplyResponse(
            outcome=outcome, before=before, after=None, applied_at=applied_at, replayed=False
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
                await self.ledger.finish(key, response, available_after)
        return response

    async def _record_failure(self, key: str, exc: BackendError) -> None:
        # Only a definite HTTP refusal proves nothing was spent; anything else stays pending.
        definite = exc.kind == "status"
        message = "consume timed out; outcome unknown" if exc.kind == "timeout" else exc.detail
        await self.ledger.fail(key, message, int(time.time()), keep_pending=not definite)

    def _apply_error(self, account_id: str, exc: BackendError) -> RpcError:
        if exc.kind == "timeout":
            return RpcError(
                INTERNAL_ERROR,
                "rate limit reset consume timed out; the attempt stays pending: " + _RESEND,
            )
        if exc.status == 401:
            return refused(account_id, ext.ResetDisabledReason.REAUTH_REQUIRED)
        if exc.status == 404:
            return refused(account_id, ext.ResetDisabledReason.UNSUPPORTED)
        message = "failed to consume rate limit reset: " + exc.detail
        if exc.kind != "status":
            # The request may have reached upstream (a dropped answer, an unreadable body): say so.
            message += "; the attempt stays pending: " + _RESEND
        return RpcError(INTERNAL_ERROR, message)

    async def history(self, account_id: str | None, limit: int) -> list[ext.ApplyRecord]:
        if account_id is not None:
            self.member(account_id)
        return await self.ledger.history(account_id, limit)
