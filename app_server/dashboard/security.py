"""Who may use the dashboard, and the headers every answer carries.

Two ways in:

- scripts send `Authorization: Bearer <token>` (the admin token, from the token file);
- the page gets a session cookie (HttpOnly, SameSite=Strict, Path=/) by opening a one-time
  login link `/login?code=...` that `serve_dashboard` prints; the page then asks
  `GET /api/session` for its CSRF token (readable only by same-origin script).

A state-changing request made with the cookie must be same-origin (its `Origin`, or failing that
its `Sec-Fetch-Site`, says so; a request with neither is refused) and carry the session's CSRF
token in `X-CSRF-Token`. A bearer request carries no ambient authority (a browser never adds the
header by itself), so it needs no CSRF token; it is still refused when a browser marks it
cross-site. Every `Host` must be one we serve (a guard against DNS rebinding).

Secrets are compared in constant time: every lookup goes through a SHA-256 digest of the presented
value, and the token through `hmac.compare_digest`. The server keeps only digests of session ids
and login codes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app_server.dashboard.errors import error_response

SESSION_COOKIE: Final = "codex_limits_session"
CSRF_HEADER: Final = "x-csrf-token"
LOGIN_CODE_TTL: Final = 600.0
"""Seconds a one-time login link stays valid."""
SESSION_IDLE_TTL: Final = 12 * 3600.0
"""Seconds a page session lives without being used."""
MAX_SESSIONS: Final = 64
MAX_LOGIN_CODES: Final = 16

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)


def new_secret() -> str:
    """A fresh random secret: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class Session:
    """A page session: its CSRF token and when it expires (Unix seconds)."""

    csrf_token: str
    expires: float


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a script with the bearer token, or a page with a session."""

    kind: Literal["bearer", "session"]
    session: Session | None = None


class Gate:
    """The admin token, the one-time login codes and the page sessions of one dashboard."""

    def __init__(self, token: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self._token_digest = _digest(token)
        self._clock = clock
        self._codes: OrderedDict[bytes, float] = OrderedDict()
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    # -- the bearer token --------------------------------------------------------------------

    def check_token(self, presented: str) -> bool:
        return hmac.compare_digest(_digest(presented), self._token_digest)

    def bearer(self, headers: Headers) -> bool | None:
        """True/False for a request with a bearer `Authorization`; None when it has none."""
        value = headers.get("authorization")
        if value is None:
            return None
        scheme, _, presented = value.partition(" ")
        return scheme.lower() == "bearer" and self.check_token(presented.strip())

    # -- one-time login links ----------------------------------------------------------------

    def issue_login_code(self) -> str:
        """A code for one `/login?code=` visit within `LOGIN_CODE_TTL` seconds."""
        self._expire()
        code = new_secret()
        self._codes[_digest(code)] = self._clock() + LOGIN_CODE_TTL
        while len(self._codes) > MAX_LOGIN_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> tuple[str, Session] | None:
        """Spend a login code: a new session (its cookie value and state), or None."""
        self._expire()
        if self._codes.pop(_digest(code), None) is None:
            return None
        session_id = new_secret()
        session = Session(csrf_token=new_secret(), expires=self._clock() + SESSION_IDLE_TTL)
        self._sessions[_digest(session_id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    # -- sessions ----------------------------------------------------------------------------

    def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if session.expires <= now:
            del self._sessions[key]
            return None
        session.expires = now + SESSION_IDLE_TTL
        self._sessions.move_to_end(key)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def alive(self, session: Session) -> bool:
        return any(s is session for s in self._sessions.values()) and session.expires > self._clock()

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(_digest(presented), _digest(session.csrf_token))

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, expiry in self._codes.items() if expiry <= now]:
            del self._codes[key]
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


# -- origin checks ---------------------------------------------------------------------------


def request_origin(scheme: str, host: str) -> str:
    return f"{scheme}://{host}".lower()


def cross_site(headers: Headers, own_origin: str) -> bool:
    """True when a browser says the request comes from another origin."""
    origin = headers.get("origin")
    if origin is not None and origin.lower() != own_origin:
        return True
    site = headers.get("sec-fetch-site")
    return site is not None and site not in ("same-origin", "none")


def proven_same_origin(headers: Headers, own_origin: str) -> bool:
    """True when the browser positively says the request is same-origin (needed with the cookie)."""
    if cross_site(headers, own_origin):
        return False
    return headers.get("origin") is not None or headers.get("sec-fetch-site") == "same-origin"


# -- every response --------------------------------------------------------------------------


class HostAndHeaders:
    """ASGI middleware: refuse unknown `Host`s (DNS rebinding) and add the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)

    def host_ok(self, host_header: str) -> bool:
        if self.allowed is None:
            return True
        host = host_header.lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in self.allowed or host in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in existing]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if not self.host_ok(Headers(scope=scope).get("host", "")):
            response = error_response(400, "invalidHost", "this Host is not served here")
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def loopback_hosts() -> frozenset[str]:
    return LOOPBACK_NAMES
