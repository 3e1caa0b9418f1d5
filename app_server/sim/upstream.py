"""Simulated ChatGPT backend for `codex-limits serve --simulate` and `codex-limits demo`.

A small HTTP server on 127.0.0.1 that answers the usage, reset-credit details, consume and OAuth refresh
calls of CONTRACT §4, §5, §7 and §8.4 for three fake accounts, so the whole app runs without a Codex account.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "ACCESS_TOKEN_LIFETIME_SECONDS",
    "PRIMARY_WINDOW_SECONDS",
    "SECONDARY_WINDOW_SECONDS",
    "RecordedRequest",
    "SimAccount",
    "SimCredit",
    "SimWindow",
    "SimulatedUpstream",
    "make_unsigned_jwt",
]

logger = logging.getLogger(__name__)

PRIMARY_WINDOW_SECONDS = 18_000
SECONDARY_WINDOW_SECONDS = 604_800
ACCESS_TOKEN_LIFETIME_SECONDS = 10 * 86_400
AUTH_CLAIM = "https://api.openai.com/auth"

_DAY = 86_400
_HOUR = 3_600
# A 1 MiB idempotency key is legal (CONTRACT §5.1), so leave generous room for the consume body.
_MAX_BODY_BYTES = 8 * 1024 * 1024
# Idle keep-alive connections are dropped after this, so abandoned clients do not pin handler threads.
_IDLE_TIMEOUT_SECONDS = 60.0
_RECORDED_REQUESTS_MAX = 1_000
_CREDIT_DESCRIPTION = "Resets your 5-hour and weekly Codex usage limits."

JSONObject = dict[str, Any]

# endpoint below /api/codex/ (or /backend-api/wham/) -> the one method it accepts
_CODEX_ROUTES = {
    "usage": "GET",
    "rate-limit-reset-credits": "GET",
    "rate-limit-reset-credits/consume": "POST",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """Return an unsigned JWT (`alg` none, signature `c2ln`) in the shape the transcripts use."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    return f"{header}.{payload}.c2ln"


def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_precise(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SimWindow:
    """One rate-limit window of a simulated account."""

    limit_window_seconds: int
    used_percent: int
    reset_at: int


@dataclass
class SimCredit:
    """One saved rate-limit reset of a simulated account."""

    id: str
    granted_at: int
    expires_at: int | None
    title: str
    description: str
    status: str = "available"  # "available" or "redeemed"
    redeemed_at: int | None = None

    def is_available(self, now: int) -> bool:
        return self.status == "available" and (self.expires_at is None or self.expires_at > now)

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "reset_type": "codex_rate_limits",
            "status": self.status,
            "granted_at": _rfc3339(self.granted_at),
            "expires_at": None if self.expires_at is None else _rfc3339(self.expires_at),
            "title": self.title,
            "description": self.description,
        }


@dataclass
class SimAccount:
    """One simulated ChatGPT account: identity, current tokens and rate-limit state."""

    key: str
    label: str
    email: str
    user_id: str
    account_id: str
    plan_type: str
    id_token: str
    access_token: str
    access_token_exp: int
    refresh_token: str
    last_refresh: int
    primary: SimWindow
    secondary: SimWindow
    credits: list[SimCredit] = field(default_factory=list)
    # idempotency key -> outcome code of the first consume that used it
    redemptions: dict[str, str] = field(default_factory=dict)
    # True makes every refresh of this account fail with 401 refresh_token_expired.
    refresh_token_expired: bool = False

    def windows(self) -> tuple[SimWindow, SimWindow]:
        return (self.primary, self.secondary)

    def available_credits(self, now: int) -> list[SimCredit]:
        """Available credits, the one expiring soonest first."""
        live = [c for c in self.credits if c.is_available(now)]
        return sorted(live, key=lambda c: (c.expires_at is None, c.expires_at or 0, c.id))

    def limit_reached(self) -> bool:
        return any(w.used_percent >= 100 for w in self.windows())


@dataclass(frozen=True)
class RecordedRequest:
    """A request the simulator received (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _HTTPError(Exception):
    def __init__(self, status: int, payload: JSONObject) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


def _error(status: int, code: str, message: str) -> _HTTPError:
    return _HTTPError(status, {"error": {"message": message, "code": code}})


def _parse_json_object(body: bytes) -> JSONObject:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _error(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _error(400, "invalid_request", "request body must be a JSON object")
    return data


class SimulatedUpstream:
    """In-process fake of the ChatGPT backend and its OAuth token endpoint.

    All account state lives behind one lock; `handle_request` is the transport-independent core and the HTTP
    server started by `start` only frames it.
    """

    def __init__(self, *, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._token_counter = 0
        self._access_tokens: dict[str, tuple[str, int]] = {}  # token -> (account key, exp)
        self._refresh_tokens: dict[str, str] = {}  # current refresh token -> account key
        self._retired_refresh_tokens: dict[str, str] = {}  # rotated-away refresh token -> account key
        self._recorded: deque[RecordedRequest] = deque(maxlen=_RECORDED_REQUESTS_MAX)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.accounts: dict[str, SimAccount] = self._build_accounts(int(now()))

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulated upstream already started")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="codex-limits-simulator",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()
        logger.info("simulated upstream listening on %s", self.base_url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = None
        self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulated upstream is not running")
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    @property
    def refresh_url(self) -> str:
        return self.base_url + "/oauth/token"

    # ----------------------------------------------------------------- helpers for callers

    def write_codex_homes(self, root: Path) -> dict[str, Path]:
        """Create `root/<key>/` with config.toml and auth.json (mode 0600) for every account."""
        base_url = self.base_url
        homes: dict[str, Path] = {}
        with self._lock:
            snapshots = [
                (a.key, a.id_token, a.access_token, a.refresh_token, a.account_id, a.last_refresh)
                for a in self.accounts.values()
            ]
        for key, id_token, access_token, refresh_token, account_id, last_refresh in snapshots:
            home = root / key
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / "config.toml").write_text(f'chatgpt_base_url = "{base_url}"\n', encoding="utf-8")
            auth = {
                "auth_mode": "chatgpt",
                "OPENAI_API_KEY": None,
                "tokens": {
                    "id_token": id_token,
                    "access_token": access_token,
                    "refresh_token": refresh_token,
                    "account_id": account_id,
                },
                "last_refresh": _rfc3339_precise(last_refresh),
            }
            # Same layout Codex writes (CONTRACT §8.4): 2-space indent, no trailing newline.
            _write_private(home / "auth.json", json.dumps(auth, indent=2))
            homes[key] = home
        return homes

    def set_usage(self, key: str, *, primary: int | None = None, secondary: int | None = None) -> None:
        """Set the used percent of an account's windows (for demos and tests)."""
        with self._lock:
            account = self.accounts[key]
            if primary is not None:
                account.primary.used_percent = primary
            if secondary is not None:
                account.secondary.used_percent = secondary

    def available_credit_count(self, key: str) -> int:
        with self._lock:
            return len(self.accounts[key].available_credits(int(self._now())))

    def recorded_requests(self) -> list[RecordedRequest]:
        """The most recent requests received, oldest first."""
        with self._lock:
            return list(self._recorded)

    # ----------------------------------------------------------------- request handling

    def handle_request(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, JSONObject]:
        """Answer one request; returns (status, JSON body). Header names are matched case-insensitively."""
        lowered = {k.lower(): v for k, v in headers.items()}
        route_path = path.split("?", 1)[0]
        with self._lock:
            self._recorded.append(RecordedRequest(method, path, lowered, body))
            now = int(self._now())
            try:
                return 200, self._dispatch(method.upper(), route_path, lowered, body, now)
            except _HTTPError as err:
                return err.status, err.payload

    def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes, now: int) -> JSONObject:
        if path == "/oauth/token":
            if method != "POST":
                raise _error(405, "method_not_allowed", f"{method} not allowed on {path}")
            return self._refresh(body, now)
        endpoint = _codex_endpoint(path)
        if endpoint not in _CODEX_ROUTES:
            raise _error(404, "not_found", f"no route for {path}")
        if method != _CODEX_ROUTES[endpoint]:
            raise _error(405, "method_not_allowed", f"{method} not allowed on {path}")
        account = self._authenticate(headers, now)
        self._roll_windows(account, now)
        if endpoint == "usage":
            return self._usage(account, now)
        if endpoint == "rate-limit-reset-credits":
            return self._details(account, now)
        return self._consume(account, body, now)

    def _authenticate(self, headers: dict[str, str], now: int) -> SimAccount:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _error(401, "missing_token", "missing bearer token")
        entry = self._access_tokens.get(token.strip())
        if entry is None:
            raise _error(401, "invalid_token", "invalid bearer token")
        key, exp = entry
        if exp <= now:
            raise _error(401, "token_expired", "token expired")
        account = self.accounts[key]
        header_account = headers.get("chatgpt-account-id")
        if header_account is not None and header_account != account.account_id:
            raise _error(403, "account_mismatch", "chatgpt-account-id does not match the bearer token")
        return account

    @staticmethod
    def _roll_windows(account: SimAccount, now: int) -> None:
        # A window whose reset time has passed starts over empty, as the real backend's would.
        for window in account.windows():
            if window.reset_at <= now:
                window.used_percent = 0
                window.reset_at = now + window.limit_window_seconds

    @staticmethod
    def _window_json(window: SimWindow, now: int) -> JSONObject:
        return {
            "used_percent": window.used_percent,
            "limit_window_seconds": window.limit_window_seconds,
            "reset_after_seconds": max(0, window.reset_at - now),
            "reset_at": window.reset_at,
        }

    def _usage(self, account: SimAccount, now: int) -> JSONObject:
        reached = account.limit_reached()
        return {
            "plan_type": account.plan_type,
            "user_id": account.user_id,
            "account_id": account.account_id,
            "email": account.email,
            "rate_limit": {
                "allowed": not reached,
                "limit_reached": reached,
                "primary_window": self._window_json(account.primary, now),
                "secondary_window": self._window_json(account.secondary, now),
            },
            "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
            "rate_limit_reset_credits": {"available_count": len(account.available_credits(now))},
            "rate_limit_reached_type": {"type": "rate_limit_reached"} if reached else None,
        }

    @staticmethod
    def _details(account: SimAccount, now: int) -> JSONObject:
        available = account.available_credits(now)
        return {
            "available_count": len(available),
            "total_earned_count": len(account.credits),
            "credits": [c.to_json() for c in available],
        }

    def _consume(self, account: SimAccount, body: bytes, now: int) -> JSONObject:
        request = _parse_json_object(body)
        key = request.get("redeem_request_id")
        if not isinstance(key, str) or not key:
            raise _error(400, "invalid_request", "redeem_request_id must be a non-empty string")
        credit_id = request.get("credit_id")
        if credit_id is not None and not isinstance(credit_id, str):
            raise _error(400, "invalid_request", "credit_id must be a string or null")

        previous = account.redemptions.get(key)
        if previous is not None:
            return {"code": "already_redeemed" if previous == "reset" else previous}

        available = account.available_credits(now)
        if credit_id is None:
            chosen = available[0] if available else None
        else:
            chosen = next((c for c in available if c.id == credit_id), None)
        if chosen is None:
            account.redemptions[key] = "no_credit"
            logger.info("simulator: %s consume %r -> no_credit", account.key, key)
            return {"code": "no_credit"}
        used = [w for w in account.windows() if w.used_percent > 0]
        if not used:
            account.redemptions[key] = "nothing_to_reset"
            logger.info("simulator: %s consume %r -> nothing_to_reset", account.key, key)
            return {"code": "nothing_to_reset"}

        chosen.status = "redeemed"
        chosen.redeemed_at = now
        for window in account.windows():
            window.used_percent = 0
            window.reset_at = now + window.limit_window_seconds
        account.redemptions[key] = "reset"
        logger.info("simulator: %s consume %r -> reset with %s", account.key, key, chosen.id)
        credit = chosen.to_json()
        credit["redeemed_at"] = _rfc3339(now)
        return {"code": "reset", "windows_reset": len(used), "credit": credit}

    def _refresh(self, body: bytes, now: int) -> JSONObject:
        request = _parse_json_object(body)
        if request.get("grant_type") != "refresh_token":
            raise _error(400, "unsupported_grant_type", "grant_type must be refresh_token")
        token = request.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise _error(400, "invalid_request", "refresh_token must be a non-empty string")
        key = self._refresh_tokens.get(token)
        if key is None:
            if token in self._retired_refresh_tokens:
                raise _error(401, "refresh_token_reused", "refresh token was already used")
            raise _error(401, "invalid_grant", "unknown refresh token")
        account = self.accounts[key]
        if account.refresh_token_expired:
            raise _error(401, "refresh_token_expired", "Your refresh token has expired. Please sign in again.")

        self._issue_access_token(account, now, now + ACCESS_TOKEN_LIFETIME_SECONDS)
        # Rotation: the old refresh token stops working, like the real OAuth server's.
        del self._refresh_tokens[token]
        self._retired_refresh_tokens[token] = key
        account.refresh_token = self._issue_refresh_token(account)
        account.last_refresh = now
        logger.info("simulator: refreshed tokens of %s", account.key)
        return {
            "id_token": account.id_token,
            "access_token": account.access_token,
            "refresh_token": account.refresh_token,
        }

    # ----------------------------------------------------------------- accounts and tokens

    def _next_serial(self) -> int:
        self._token_counter += 1
        return self._token_counter

    def _issue_access_token(self, account: SimAccount, now: int, exp: int) -> None:
        token = make_unsigned_jwt(
            {
                "exp": exp,
                "iat": now,
                "jti": f"sim-{account.key}-{self._next_serial()}",
                AUTH_CLAIM: {
                    "chatgpt_account_id": account.account_id,
                    "chatgpt_plan_type": account.plan_type,
                    "chatgpt_user_id": account.user_id,
                },
            }
        )
        self._access_tokens[token] = (account.key, exp)
        account.access_token = token
        account.access_token_exp = exp

    def _issue_refresh_token(self, account: SimAccount) -> str:
        token = f"sim-refresh-{account.key}-{self._next_serial()}"
        self._refresh_tokens[token] = account.key
        return token

    @staticmethod
    def _new_account(
        now: int,
        key: str,
        label: str,
        plan_type: str,
        primary: tuple[int, int],
        secondary: tuple[int, int],
        credits: list[SimCredit],
    ) -> SimAccount:
        """An account with usage `(percent, seconds until reset)` per window; tokens are issued by the caller."""
        email = f"{key}@example.com"
        user_id = f"user-sim-{key}"
        account_id = f"acct-sim-{key}"
        id_token = make_unsigned_jwt(
            {
                "email": email,
                AUTH_CLAIM: {
                    "chatgpt_plan_type": plan_type,
                    "chatgpt_account_id": account_id,
                    "chatgpt_user_id": user_id,
                },
            }
        )
        return SimAccount(
            key=key,
            label=label,
            email=email,
            user_id=user_id,
            account_id=account_id,
            plan_type=plan_type,
            id_token=id_token,
            access_token="",
            access_token_exp=0,
            refresh_token="",
            last_refresh=now,
            primary=SimWindow(PRIMARY_WINDOW_SECONDS, primary[0], now + primary[1]),
            secondary=SimWindow(SECONDARY_WINDOW_SECONDS, secondary[0], now + secondary[1]),
            credits=credits,
        )

    def add_account(
        self,
        key: str,
        label: str,
        plan_type: str,
        *,
        primary: tuple[int, int],
        secondary: tuple[int, int],
        credit_days: list[int],
    ) -> SimAccount:
        """Add a signed-in account (before `write_codex_homes`): windows as `(percent, seconds until reset)`,
        one saved reset per entry of `credit_days` (days until it expires)."""
        with self._lock:
            now = int(self._now())
            credits = [
                SimCredit(f"credit-{key}-{i}", now - _DAY, now + days * _DAY, "Full reset", _CREDIT_DESCRIPTION)
                for i, days in enumerate(credit_days, start=1)
            ]
            account = self._new_account(now, key, label, plan_type, primary, secondary, credits)
            self._issue_access_token(account, now, now + ACCESS_TOKEN_LIFETIME_SECONDS)
            account.refresh_token = self._issue_refresh_token(account)
            self.accounts[key] = account
            return account

    def _build_accounts(self, now: int) -> dict[str, SimAccount]:
        def account(
            key: str,
            label: str,
            plan_type: str,
            primary: tuple[int, int],
            secondary: tuple[int, int],
            credits: list[SimCredit],
        ) -> SimAccount:
            return self._new_account(now, key, label, plan_type, primary, secondary, credits)

        description = _CREDIT_DESCRIPTION
        alice = account(
            "alice",
            "Alice (Pro)",
            "pro",
            primary=(100, 2 * _HOUR + 17 * 60),
            secondary=(92, 3 * _DAY + 5 * _HOUR),
            credits=[
                SimCredit("credit-alice-1", now - 12 * _DAY, now + 7 * _DAY, "Full reset", description),
                SimCredit("credit-alice-2", now - 2 * _DAY, now + 21 * _DAY, "Full reset", description),
            ],
        )
        bob = account(
            "bob",
            "Bob (Plus)",
            "plus",
            primary=(35, 3 * _HOUR + 5 * 60),
            secondary=(12, 5 * _DAY + 2 * _HOUR),
            credits=[],
        )
        carol = account(
            "carol",
            "Carol (Team)",
            "team",
            primary=(64, _HOUR),
            secondary=(48, 2 * _DAY),
            credits=[SimCredit("credit-carol-1", now - 5 * _DAY, now + 9 * _DAY, "Full reset", description)],
        )
        for fresh in (alice, bob):
            self._issue_access_token(fresh, now, now + ACCESS_TOKEN_LIFETIME_SECONDS)
            fresh.refresh_token = self._issue_refresh_token(fresh)
        # Carol signed in long ago: her access token has expired and her refresh token is dead, so the app
        # must report that she needs to sign in again.
        self._issue_access_token(carol, now - 12 * _DAY, now - 2 * _DAY)
        carol.refresh_token = "sim-refresh-carol-expired"
        self._refresh_tokens[carol.refresh_token] = carol.key
        carol.refresh_token_expired = True
        carol.last_refresh = now - 12 * _DAY
        return {a.key: a for a in (alice, bob, carol)}


def _codex_endpoint(path: str) -> str | None:
    for prefix in ("/api/codex/", "/backend-api/wham/"):
        if path.startswith(prefix):
            return path[len(prefix) :].rstrip("/")
    return None


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # fchmod before writing: O_CREAT's mode does not apply to a file that already exists.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: SimulatedUpstream) -> None:
        self.upstream = upstream
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # Keep-alive handler threads block reading their socket; shutting it down lets them exit promptly.
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT_SECONDS
    # Headers and body go out in separate writes; without TCP_NODELAY the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True

    def _sim_server(self) -> _Server:
        server = self.server
        assert isinstance(server, _Server)
        return server

    def setup(self) -> None:
        super().setup()
        self._sim_server().track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._sim_server().track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulator %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            self._send(400, _error(400, "invalid_request", "unreadable request body").payload, close=True)
            return
        try:
            status, payload = self._sim_server().upstream.handle_request(
                self.command, self.path, dict(self.headers.items()), body
            )
        except Exception:
            logger.exception("simulator failed on %s %s", self.command, self.path)
            status, payload = 500, _error(500, "internal_error", "simulator error").payload
        self._send(status, payload)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it cannot be framed (the connection is then closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if length < 0 or length > _MAX_BODY_BYTES:
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, status: int, payload: JSONObject, *, close: bool = False) -> None:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
