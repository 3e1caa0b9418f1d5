"""One Codex home as a rate-limit account: its auth.json, its backend, and the two calls on it.

Shared by the upstream methods (the `$CODEX_HOME` account) and by the account pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from app_server.config import Settings, read_base_url
from app_server.upstream.auth import AuthKind, AuthState, AuthStore
from app_server.upstream.backend import Backend, BackendError, Caller, HttpPool
from app_server.upstream.errors import AuthRequired, Purpose
from app_server.upstream.mapping import rate_limits_response
from app_server.upstream.payloads import CONSUME_OUTCOMES, ResetCreditDetails, Usage
from app_server.upstream.shared import SharedCalls
from protocol import v2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    """One read of an account: its usage, the reset-credit details (or why they are missing)."""

    usage: Usage
    details: ResetCreditDetails | None
    details_error: BackendError | None


def auth_error(state: AuthState, purpose: Purpose) -> AuthRequired | None:
    """CONTRACT §8.1 (with D5: a ChatGPT file without usable tokens counts as no auth)."""
    if state.kind is AuthKind.API_KEY:
        return AuthRequired(purpose, api_key=True)
    if state.kind is AuthKind.NONE or state.credentials is None:
        return AuthRequired(purpose, api_key=False)
    return None


@dataclass(frozen=True)
class SignIn:
    """What a Codex home's auth.json allows right now: a `caller` to call upstream with, or none, and then
    `state` says why (`expired`: a saved sign-in was there, but it could not be refreshed)."""

    state: AuthState
    caller: Caller | None
    expired: bool = False


_ReadKey = tuple[Caller, bool, bool]


class CodexAccount:
    """One Codex home: its auth.json (`auth`), its backend (`backend`), and the calls on them.

    Get one through `AccountRegistry.get(home)` so that every user of a home shares one instance:
    one token-refresh state and one `spend_lock`, the FIFO queue of credit-spending calls (§1.4),
    and one `reads`, where concurrent reads share their upstream calls (see `fetch`).
    """

    def __init__(self, home: Path, settings: Settings, http: HttpPool) -> None:
        self.home = home
        # anyio locks wake waiters in FIFO order: consumes run in the order they arrived (§1.4).
        self.spend_lock = anyio.Lock()
        self.auth = AuthStore(
            home, refresh_url=settings.refresh_url, client=http.client, refresh_timeout=settings.timeouts.refresh
        )
        self.backend = Backend(read_base_url(home), http, settings.timeouts)
        self.reads: SharedCalls[_ReadKey, Fetched] = SharedCalls()
        self._answer: tuple[Fetched, v2.GetAccountRateLimitsResponse] | None = None

    async def caller(self, purpose: Purpose, *, user_agent: str, originator: str) -> Caller:
        """Refresh if due, then the identity to call with; raises `AuthRequired` when there is none."""
        state = self.auth.state()
        error = auth_error(state, purpose)
        if error is not None:
            raise error
        state = await self.auth.ensure_fresh(user_agent=user_agent, originator=originator)
        error = auth_error(state, purpose)
        if error is not None:
            raise error
        assert state.credentials is not None
        creds = state.credentials
        return Caller(
            user_agent=user_agent, access_token=creds.access_token, account_id=creds.account_id, fedramp=creds.fedramp
        )

    async def sign_in(self, *, user_agent: str, originator: str) -> SignIn:
        """The pool's `caller`: an auth.json that was missing or empty is read again (the operator may have run
        `codex login` since), refreshed if due; what is wrong is returned, not raised."""
        state = self.auth.state()
        if state.kind is AuthKind.NONE or (state.kind is AuthKind.CHATGPT and state.credentials is None):
            state = self.auth.reload()
        if auth_error(state, Purpose.READ) is not None:
            return SignIn(state, None)
        state = await self.auth.ensure_fresh(user_agent=user_agent, originator=originator)
        if state.reauth_required or state.credentials is None:
            return SignIn(state, None, expired=True)
        creds = state.credentials
        return SignIn(state, Caller(user_agent, creds.access_token, creds.account_id, creds.fedramp))

    async def fetch(self, caller: Caller, *, details: bool, luna: bool = False) -> Fetched:
        """Usage and (unless excluded) the details, from upstream calls started after this call.

        Shared (`SharedCalls`): while two fetches with the same credentials and options are in flight,
        callers that arrive wait for the next one, which starts when one of those ends, and all get its
        result (or its error). That fetch is made with the headers of the first of them (its user agent);
        credentials (token, account id, FedRAMP) and options are part of what must match, so they are
        never mixed. Consumes are never shared (`consume`).
        A usage failure raises BackendError; a details failure never does: it is kept in
        `details_error` (the pool reads a 404 from it)."""
        key = (replace(caller, user_agent=""), details, luna)
        return await self.reads.call(key, lambda: self._fetch(caller, details=details, luna=luna))

    async def _fetch(self, caller: Caller, *, details: bool, luna: bool) -> Fetched:
        found: list[tuple[ResetCreditDetails | None, BackendError | None]] = []

        async def load_details() -> None:
            found.append(await self.backend.details_or_error(caller))

        # The usage error waits for the details call to finish, as upstream joins both (§4.2).
        failure: BackendError | None = None
        async with anyio.create_task_group() as tg:
            if details:
                tg.start_soon(load_details)
            try:
                usage = await self.backend.usage(caller, luna=luna)
            except BackendError as exc:
                failure = exc
        if failure is not None:
            raise failure
        rows, details_error = found[0] if found else (None, None)
        if details_error is not None:
            log.info("reset-credit details unavailable (%s); using the usage count", details_error.kind)
        return Fetched(usage, rows, details_error)

    def response(self, fetched: Fetched) -> v2.GetAccountRateLimitsResponse:
        """The wire result, with the account-bound fields checked against the signed-in account (§4.8)."""
        creds = self.auth.state().credentials
        return rate_limits_response(
            fetched.usage,
            fetched.details,
            signed_in_user_id=creds.user_id if creds else None,
            signed_in_account_id=creds.account_id if creds else None,
        )

    async def read(self, caller: Caller, *, details: bool, luna: bool = False) -> v2.GetAccountRateLimitsResponse:
        """`fetch` as the wire result. The readers of one shared fetch share one (never modified) result."""
        fetched = await self.fetch(caller, details=details, luna=luna)
        answer = self._answer
        if answer is not None and answer[0] is fetched:
            return answer[1]
        response = self.response(fetched)
        self._answer = (fetched, response)
        return response

    async def consume(
        self, caller: Caller, idempotency_key: str, credit_id: str | None
    ) -> v2.ConsumeAccountRateLimitResetCreditOutcome:
        """The one call that spends a saved reset. Never shared, never retried: the caller holds `spend_lock`."""
        return CONSUME_OUTCOMES[await self.backend.consume(caller, idempotency_key, credit_id)]


class AccountRegistry:
    """The one `CodexAccount` per Codex home (by real path), made on first use."""

    def __init__(self, settings: Settings, http: HttpPool) -> None:
        self._settings = settings
        self._http = http
        self._accounts: dict[Path, CodexAccount] = {}

    def get(self, home: Path) -> CodexAccount:
        key = home.resolve()
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = CodexAccount(home, self._settings, self._http)
        return account
