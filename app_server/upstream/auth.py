"""`$CODEX_HOME/auth.json`: classification, credentials, token refresh and the atomic, cross-process rewrite.

CONTRACT §8 is the reference; §10 D5 (no backend call without a bearer token) is applied on top.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from app_server.files import (
    FileRefused,
    acquire_polled,
    lock_file,
    read_regular,
    remove_stale_temp_files,
    write_atomic,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CLIENT_ID",
    "AuthKind",
    "AuthState",
    "AuthStore",
    "ChatgptCredentials",
    "RefreshFailure",
    "format_last_refresh",
    "parse_rfc3339",
]

logger = logging.getLogger(__name__)

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
AUTH_FILE = "auth.json"
LOCK_FILE = "auth.json.lock"

_AUTH_CLAIM = "https://api.openai.com/auth"
_EXPIRY_MARGIN = 300.0  # §8.4: a JWT expiring within 5 minutes is refreshed
_SCHEDULED_AGE = 8 * 86400.0  # §8.4: an opaque token is refreshed after about 8 days
_PERMANENT_CODES = frozenset({"refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated"})
# Error codes worth naming in a log line; anything else is shown as "other" (a server could echo a token).
_LOGGED_CODES = _PERMANENT_CODES | {"invalid_grant", "invalid_request", "invalid_client", "unauthorized_client"}
_TMP_PREFIX = ".auth.json."
_TMP_SUFFIX = ".tmp"
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class AuthKind(StrEnum):
    """How a Codex home is signed in: not at all, with an API key, or with ChatGPT."""

    NONE = "none"
    API_KEY = "apiKey"
    CHATGPT = "chatgpt"


class RefreshFailure(StrEnum):
    """Why the last token refresh failed: for good (sign in again) or for now (retry later)."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class ChatgptCredentials:
    """What the backend calls need (§7.2, §8.2) and the id_token claims the handlers use (§4.8)."""

    access_token: str = field(repr=False)
    account_id: str | None
    user_id: str | None
    email: str | None
    plan_type: str | None
    fedramp: bool


@dataclass(frozen=True)
class AuthState:
    """What auth.json says now: its kind, its ChatGPT credentials and the last refresh failure."""

    kind: AuthKind
    credentials: ChatgptCredentials | None
    refresh_failure: RefreshFailure | None

    @property
    def reauth_required(self) -> bool:
        """True when only a new login can help: no usable auth.json (NONE), or the refresh token was rejected
        for good (PERMANENT). An API key or a transient refresh failure does not count."""
        return self.kind is AuthKind.NONE or self.refresh_failure is RefreshFailure.PERMANENT


# -- parsing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Document:
    """One parse of auth.json. `raw` is the whole JSON object, kept to rewrite unknown members."""

    kind: AuthKind
    raw: Mapping[str, Any] | None = field(default=None, repr=False)
    credentials: ChatgptCredentials | None = None
    refresh_token: str | None = field(default=None, repr=False)
    last_refresh: datetime | None = None

    @property
    def token_key(self) -> tuple[str | None, str | None]:
        """What identifies a login: a re-login or another process's refresh changes it."""
        access = self.credentials.access_token if self.credentials else None
        return access, self.refresh_token


_NO_AUTH = _Document(AuthKind.NONE)


def _b64url_json(segment: str) -> Any:
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(data)
    except (binascii.Error, ValueError):
        return None


def _jwt_claims(token: object) -> dict[str, Any]:
    """The payload of a JWT without verifying it (as upstream does); {} when it is not one."""
    if not isinstance(token, str):
        return {}
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    claims = _b64url_json(parts[1])
    return claims if isinstance(claims, dict) else {}


def _jwt_exp(token: str) -> float | None:
    exp = _jwt_claims(token).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def parse_rfc3339(text: str) -> datetime | None:
    """RFC 3339 with any number of fractional digits (upstream writes nanoseconds), `Z` or an offset."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if m.group(8):
        tz = UTC
    else:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        # A leap second (:60) is read as :59.
        return datetime(year, month, day, hour, minute, min(second, 59), micros, tzinfo=tz)
    except ValueError:
        return None


def format_last_refresh(timestamp: float) -> str:
    """UTC RFC 3339 with 9 fractional digits like upstream; Python's clock has microseconds, so pad."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}000Z"


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _parse_document(raw: object) -> _Document:
    """§8.1 classification plus D5: ChatGPT auth without usable tokens counts as no auth."""
    if not isinstance(raw, dict):
        return _NO_AUTH
    api_key = raw.get("OPENAI_API_KEY")
    if isinstance(api_key, str):
        return _Document(AuthKind.API_KEY, raw)
    if api_key is not None or raw.get("auth_mode") not in (None, "chatgpt"):
        # A non-string key or another auth_mode is not a ChatGPT login, and carries no usable API key either.
        return _Document(AuthKind.NONE, raw)
    tokens = raw.get("tokens")
    last_refresh = raw.get("last_refresh")
    if not isinstance(tokens, dict) or not isinstance(last_refresh, str):
        return _Document(AuthKind.NONE, raw)
    access_token = tokens.get("access_token")
    refreshed_at = parse_rfc3339(last_refresh)
    if not isinstance(access_token, str) or not access_token or refreshed_at is None:
        return _Document(AuthKind.NONE, raw)
    claims = _jwt_claims(tokens.get("id_token"))
    auth_claims = claims.get(_AUTH_CLAIM)
    if not isinstance(auth_claims, dict):
        auth_claims = {}
    user_id = _opt_str(auth_claims.get("chatgpt_user_id")) or _opt_str(auth_claims.get("user_id"))
    credentials = ChatgptCredentials(
        access_token=access_token,
        account_id=_opt_str(tokens.get("account_id")),
        user_id=user_id,
        email=_opt_str(claims.get("email")),
        plan_type=_opt_str(auth_claims.get("chatgpt_plan_type")),
        fedramp=auth_claims.get("chatgpt_account_is_fedramp") is True,
    )
    return _Document(
        AuthKind.CHATGPT,
        raw,
        credentials,
        refresh_token=_opt_str(tokens.get("refresh_token")),
        last_refresh=refreshed_at,
    )


def _read_document(path: Path) -> _Document:
    """auth.json parsed; no auth when it is absent, unreadable, not a regular file, over 1 MiB or not JSON."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        return _NO_AUTH
    except FileRefused as exc:
        logger.warning("cannot read %s: %s", path, exc.reason)
        return _NO_AUTH
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, type(exc).__name__)
        return _NO_AUTH
    try:
        raw = json.loads(data)
    except ValueError:  # covers UnicodeDecodeError and JSONDecodeError, and the empty file
        return _NO_AUTH
    return _parse_document(raw)


def _refresh_reason(doc: _Document, now: float) -> str | None:
    """§8.4: `proactive_expiry`, `scheduled`, or None when no refresh is due."""
    if doc.kind is not AuthKind.CHATGPT or doc.credentials is None:
        return None
    exp = _jwt_exp(doc.credentials.access_token)
    if exp is not None:
        return "proactive_expiry" if exp <= now + _EXPIRY_MARGIN else None
    if doc.last_refresh is not None and now - doc.last_refresh.timestamp() > _SCHEDULED_AGE:
        return "scheduled"
    return None


def _render_document(raw: Mapping[str, Any], new_tokens: Mapping[str, str], last_refresh: str) -> bytes:
    """The rewritten auth.json (§8.4 format). Unlike upstream, members we do not know are kept, after ours."""
    old_tokens = raw.get("tokens")
    merged: dict[str, Any] = dict(old_tokens) if isinstance(old_tokens, dict) else {}
    merged.update(new_tokens)
    tokens: dict[str, Any] = {k: merged[k] for k in ("id_token", "access_token", "refresh_token") if k in merged}
    tokens["account_id"] = merged.get("account_id")
    for key, value in merged.items():
        tokens.setdefault(key, value)
    out: dict[str, Any] = {}
    if "auth_mode" in raw:
        out["auth_mode"] = raw["auth_mode"]
    out["OPENAI_API_KEY"] = raw.get("OPENAI_API_KEY")
    out["tokens"] = tokens
    out["last_refresh"] = last_refresh
    for key, value in raw.items():
        out.setdefault(key, value)
    return json.dumps(out, indent=2, ensure_ascii=False).encode("utf-8")


# -- writing -------------------------------------------------------------------------------------------------


# -- the refresh call ----------------------------------------------------------------------------------------


class _RefreshError(Exception):
    """A failed refresh; the message is safe to log (status, error code or exception type only)."""

    def __init__(self, failure: RefreshFailure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


def _error_code(body: object) -> str | None:
    """`{"error": "invalid_grant"}`, `{"error": {"code": ...}}` or `{"code": ...}`."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    code = body.get("code")
    return code if isinstance(code, str) else None


def _classify_refresh_response(status: int, content: bytes) -> dict[str, str]:
    """The replacement tokens of a 2xx answer, or `_RefreshError` with its permanence."""
    try:
        body: object = json.loads(content)
    except ValueError:
        body = None
    if 200 <= status < 300:
        if not isinstance(body, dict):
            raise _RefreshError(RefreshFailure.TRANSIENT, f"HTTP {status} with an invalid JSON body")
        replacements: dict[str, str] = {}
        for key in ("id_token", "access_token", "refresh_token"):
            value = body.get(key)
            if isinstance(value, str):
                replacements[key] = value
            elif value is not None:
                raise _RefreshError(RefreshFailure.TRANSIENT, f"HTTP {status} with a non-string {key}")
        return replacements
    code = _error_code(body)
    shown = code if code in _LOGGED_CODES else "-" if code is None else "other"
    if status == 401 or (status == 400 and code == "invalid_grant") or code in _PERMANENT_CODES:
        raise _RefreshError(RefreshFailure.PERMANENT, f"HTTP {status} error={shown}")
    raise _RefreshError(RefreshFailure.TRANSIENT, f"HTTP {status} error={shown}")


def _build_refresh_request(
    url: str, refresh_token: str, reason: str, *, user_agent: str, originator: str, timeout: float
) -> httpx.Request:
    """§8.4 request. Built as a bare `httpx.Request` so no client default header (python-httpx user agent,
    accept-encoding, connection) is merged in. httpx adds `host` and `content-length`; h11 writes `host` first
    on the wire, where upstream sends it after `accept`."""
    import httpx  # here, not at module level: httpx stays out of start-up

    body = json.dumps(
        {
            "client_id": CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_reason": reason,
            "refresh_token": refresh_token,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    # Bytes values: a non-ASCII originator or user agent goes out as UTF-8 instead of failing to encode.
    headers = [
        (b"content-type", b"application/json"),
        (b"originator", originator.encode("utf-8")),
        (b"user-agent", user_agent.encode("utf-8")),
        (b"accept", b"*/*"),
    ]
    return httpx.Request(
        "POST",
        url,
        headers=headers,
        content=body,
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )


# -- the store -----------------------------------------------------------------------------------------------


class AuthStore:
    """One `$CODEX_HOME/auth.json`, parsed once and cached (§8.3), refreshed when due (§8.4).

    A refresh runs under an in-process lock and the cross-process `auth.json.lock`; the file is re-read
    under the latter, so a refresh done meanwhile by another process (or a new login) is adopted, not
    repeated.
    """

    def __init__(
        self,
        codex_home: Path,
        *,
        refresh_url: str,
        client: Callable[[], httpx.AsyncClient],
        clock: Callable[[], float] = time.time,
        refresh_timeout: float = 30.0,
    ) -> None:
        self._home = Path(codex_home)
        self._refresh_url = refresh_url
        self._client = client
        self._clock = clock
        self._refresh_timeout = refresh_timeout
        # Waiting for another process's refresh is bounded like the refresh itself, plus the write.
        self._lock_timeout = refresh_timeout + 10.0
        self._doc: _Document | None = None
        self._failure: RefreshFailure | None = None
        self._state: AuthState | None = None
        self._attempts = 0
        self._local_lock: anyio.Lock | None = None
        self._file_lock = lock_file(self._home / LOCK_FILE)

    def __repr__(self) -> str:
        kind = self._doc.kind.value if self._doc is not None else "unread"
        return f"AuthStore(path={str(self.path)!r}, kind={kind}, refresh_failure={self._failure})"

    @property
    def path(self) -> Path:
        return self._home / AUTH_FILE

    def state(self) -> AuthState:
        if self._state is None:
            self._adopt(_read_document(self.path))
        assert self._state is not None
        return self._state

    def reload(self) -> AuthState:
        doc = _read_document(self.path)
        previous = self._doc
        if previous is None or previous.token_key != doc.token_key:
            self._failure = None
        self._adopt(doc)
        return self.state()

    async def ensure_fresh(self, *, user_agent: str, originator: str) -> AuthState:
        state = self.state()
        if self._failure is RefreshFailure.PERMANENT or self._due() is None:
            return state
        attempts_seen = self._attempts
        if self._local_lock is None:
            self._local_lock = anyio.Lock()
        async with self._local_lock:
            # Callers that queued behind an attempt share its outcome instead of repeating it.
            if self._attempts == attempts_seen:
                try:
                    await self._refresh_under_file_lock(user_agent, originator)
                finally:
                    self._attempts += 1
        return self.state()

    # -- internals -------------------------------------------------------------------------------------------

    def _adopt(self, doc: _Document) -> None:
        self._doc = doc
        self._state = AuthState(doc.kind, doc.credentials, self._failure)

    def _fail(self, failure: RefreshFailure, detail: str) -> None:
        self._failure = failure
        self._state = AuthState(self.state().kind, self.state().credentials, failure)
        logger.warning("token refresh failed (%s): %s; keeping the current access token", failure, detail)

    def _due(self) -> str | None:
        assert self._doc is not None
        return _refresh_reason(self._doc, self._clock())

    async def _refresh_under_file_lock(self, user_agent: str, originator: str) -> None:
        try:
            acquired = await acquire_polled(self._file_lock, self._lock_timeout)
        except OSError as exc:
            self._fail(RefreshFailure.TRANSIENT, f"cannot take {LOCK_FILE}: {type(exc).__name__}")
            return
        if not acquired:
            self._fail(RefreshFailure.TRANSIENT, f"{LOCK_FILE} held by another process for too long")
            return
        try:
            # Shielded: once the request is sent the server may rotate the refresh token, so the answer must
            # be persisted even if our caller gives up; the refresh timeout still bounds it.
            with anyio.CancelScope(shield=True):
                await self._refresh_locked(user_agent, originator)
        finally:
            self._file_lock.release()

    async def _refresh_locked(self, user_agent: str, originator: str) -> None:
        latest = await anyio.to_thread.run_sync(_read_document, self.path)
        assert self._doc is not None
        if latest.token_key != self._doc.token_key:
            logger.info("auth.json changed on disk (refreshed elsewhere or a new login); using it")
            self._failure = None
        self._adopt(latest)
        reason = _refresh_reason(latest, self._clock())
        if reason is None:
            return
        if latest.refresh_token is None:
            self._fail(RefreshFailure.PERMANENT, "auth.json has no refresh token")
            return
        logger.info("refreshing the access token (%s)", reason)
        try:
            request = _build_refresh_request(
                self._refresh_url,
                latest.refresh_token,
                reason,
                user_agent=user_agent,
                originator=originator,
                timeout=self._refresh_timeout,
            )
            with anyio.fail_after(self._refresh_timeout):
                response = await self._client().send(request, auth=None, follow_redirects=False)
            replacements = _classify_refresh_response(response.status_code, response.content)
        except _RefreshError as exc:
            self._fail(exc.failure, exc.detail)
            return
        except TimeoutError:
            self._fail(RefreshFailure.TRANSIENT, f"no answer within {self._refresh_timeout:g} s")
            return
        except Exception as exc:
            # Only the type: messages of lower layers are not ours to vet for secrets.
            self._fail(RefreshFailure.TRANSIENT, type(exc).__name__)
            return
        assert latest.raw is not None
        data = _render_document(latest.raw, replacements, format_last_refresh(self._clock()))
        self._failure = None
        self._adopt(_parse_document(json.loads(data)))
        try:
            await anyio.to_thread.run_sync(self._write, data)
        except OSError as exc:
            # The new tokens stay in use in memory; the next login or refresh rewrites the file.
            logger.error("token refreshed but %s could not be written: %s", self.path, type(exc).__name__)
            return
        logger.info("access token refreshed; %s rewritten", self.path)

    def _write(self, data: bytes) -> None:
        remove_stale_temp_files(self._home, tmp_prefix=_TMP_PREFIX, tmp_suffix=_TMP_SUFFIX)
        write_atomic(self.path, data, tmp_prefix=_TMP_PREFIX, tmp_suffix=_TMP_SUFFIX)
