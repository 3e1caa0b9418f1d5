"""`app_server.upstream.auth` against CONTRACT §8 and the 40*/41* transcripts (plus D5 and our own hardening)."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import anyio
import filelock
import httpx
import pytest

from app_server.upstream import auth as auth_module
from app_server.upstream.auth import (
    AuthKind,
    AuthState,
    AuthStore,
    ChatgptCredentials,
    RefreshFailure,
    format_last_refresh,
    parse_rfc3339,
)
from tests.support import transcripts
from tests.support.mock_backend import MockBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
REFRESH_URL = "http://auth.test/oauth/token"
# The 41a-41e runs started at 2026-11-22T01:49:54Z: their tokens expire (or were refreshed) relative to it.
START = 1795312194.0
JWT_HEADER = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"
UPSTREAM_UA = "codex_cli_rs/0.169.0 (<OS_TYPE> <OS_VERSION>; <ARCH>) xterm"
WAIT = 10.0

pytestmark = pytest.mark.anyio


def jwt(payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{JWT_HEADER}.{body}.c2ln"


def write_auth(home: Path, content: Any, mode: int = 0o644) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "auth.json"
    data = content if isinstance(content, bytes) else json.dumps(content, indent=2).encode()
    path.write_bytes(data)
    path.chmod(mode)
    return path


def chatgpt_auth(access_token: str, *, last_refresh: str = "2099-01-01T00:00:00Z", **extra: Any) -> dict[str, Any]:
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": jwt({"email": "u@example.com", "https://api.openai.com/auth": {"chatgpt_plan_type": "pro"}}),
            "access_token": access_token,
            "refresh_token": "refresh",
            "account_id": "account-123",
        },
        "last_refresh": last_refresh,
        **extra,
    }


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- a scriptable refresh endpoint (httpx.MockTransport) -------------------------------------------------------

Answer = tuple[int, bytes] | Exception


def ok(**tokens: str) -> Answer:
    return 200, json.dumps(tokens).encode()


NEW_ACCESS = jwt({"exp": START + 86400, "https://api.openai.com/auth": {"chatgpt_account_id": "account-123"}})
NEW_ID = jwt({"email": "new@example.com", "https://api.openai.com/auth": {"chatgpt_plan_type": "plus"}})


@dataclass
class FakeAuthServer:
    """Answers are used in turn, the last one repeating; `delay` is slept before answering."""

    answers: list[Answer] = field(default_factory=lambda: [ok(access_token=NEW_ACCESS, refresh_token="refresh-2")])
    delay: float = 0.0
    requests: list[httpx.Request] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        if self.delay:
            await anyio.sleep(self.delay)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    def client(self) -> httpx.AsyncClient:
        # Client defaults (python-httpx user agent, accept-encoding, extra headers) must not leak into the refresh.
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), headers={"x-client-default": "1"})


@pytest.fixture
def server() -> FakeAuthServer:
    return FakeAuthServer()


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(
    home: Path, server: FakeAuthServer, clock: Callable[[], float] | None = None, timeout: float = 5.0
) -> AuthStore:
    client = server.client()
    clock = clock or Clock()
    return AuthStore(home, refresh_url=REFRESH_URL, client=lambda: client, clock=clock, refresh_timeout=timeout)


def access(state: AuthState) -> str:
    assert state.credentials is not None
    return state.credentials.access_token


async def fresh(store: AuthStore, ua: str = "probe/1.0", originator: str = "probe") -> AuthState:
    with anyio.fail_after(WAIT):
        return await store.ensure_fresh(user_agent=ua, originator=originator)


# -- §8.1 / §8.2 classification: 40a-40k and 15a-15d ----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    kind: AuthKind
    account_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    fedramp: bool = False


CLASSIFICATION = {
    "40a_auth_none": Expected(AuthKind.NONE),
    "40b_auth_apikey": Expected(AuthKind.API_KEY),
    "40c_auth_apikey_without_mode": Expected(AuthKind.API_KEY),
    "40d_auth_none_env_OPENAI_API_KEY": Expected(AuthKind.NONE),
    "40e_auth_malformed_json": Expected(AuthKind.NONE),
    "40f_auth_chatgpt_without_last_refresh": Expected(AuthKind.NONE),  # D5
    "40g_auth_chatgpt_account_id_null": Expected(AuthKind.CHATGPT, None, None, "user@example.com"),
    "40h_auth_chatgpt_fedramp": Expected(AuthKind.CHATGPT, "account-123", None, "u@example.com", fedramp=True),
    "40i_auth_chatgpt_without_mode": Expected(AuthKind.CHATGPT, "account-123", None, "user@example.com"),
    "40j_auth_key_and_tokens_without_mode": Expected(AuthKind.API_KEY),
    "40k_auth_chatgpt_mode_without_tokens": Expected(AuthKind.NONE),  # D5
    "15a_read_validated_fields": Expected(AuthKind.CHATGPT, "account-123", "user-1", "u@example.com"),
    "15b_read_validated_fields_user_id_claim_only": Expected(
        AuthKind.CHATGPT, "account-123", "user-1", "u@example.com"
    ),
    "15c_read_validated_fields_no_tokens_account_id": Expected(AuthKind.CHATGPT, None, "user-1", "u@example.com"),
    "15d_read_validated_fields_no_user_claim": Expected(AuthKind.CHATGPT, "account-123", None, "user@example.com"),
}


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
async def test_transcript_auth_variants(
    name: str, tmp_path: Path, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = transcripts.load(name)
    scenario.write_codex_home(tmp_path, port=1)
    for key, value in scenario.env.items():
        monkeypatch.setenv(key, value)  # 40d: environment keys are not used
    expected = CLASSIFICATION[name]
    store = make_store(tmp_path, server)

    state = store.state()

    assert state.kind is expected.kind
    assert state.refresh_failure is None
    assert state.reauth_required is (expected.kind is AuthKind.NONE)
    if expected.kind is AuthKind.CHATGPT:
        auth = json.loads(store.path.read_bytes())
        assert state.credentials == ChatgptCredentials(
            access_token=auth["tokens"]["access_token"],
            account_id=expected.account_id,
            user_id=expected.user_id,
            email=expected.email,
            plan_type="pro",
            fedramp=expected.fedramp,
        )
    else:
        assert state.credentials is None
    # None of these is due (D5 files never are): no request, and the state is unchanged.
    assert await fresh(store) == state
    assert server.requests == []
    if scenario.has_auth_file:
        assert mode_of(store.path) == 0o644


TOKENS = {"id_token": "x", "access_token": "at", "refresh_token": "rt", "account_id": None}


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        pytest.param(b"", AuthKind.NONE, id="empty"),
        pytest.param(b"  \n", AuthKind.NONE, id="blank"),
        pytest.param(b"[1]", AuthKind.NONE, id="array"),
        pytest.param(b"null", AuthKind.NONE, id="null"),
        pytest.param(b'{"OPENAI_API_KEY": "\xff"}', AuthKind.NONE, id="not-utf8"),
        pytest.param({}, AuthKind.NONE, id="empty-object"),
        pytest.param({"OPENAI_API_KEY": ""}, AuthKind.API_KEY, id="empty-key"),
        pytest.param({"auth_mode": "chatgpt", "OPENAI_API_KEY": "sk"}, AuthKind.API_KEY, id="key-wins"),
        pytest.param(
            {"OPENAI_API_KEY": 5, "tokens": TOKENS, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="key-not-string",
        ),
        pytest.param(
            {"auth_mode": "apikey", "tokens": TOKENS, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="apikey-mode-without-key",
        ),
        pytest.param(
            {"auth_mode": "other", "tokens": TOKENS, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="unknown-mode",
        ),
        pytest.param({"tokens": TOKENS, "last_refresh": "2099-01-01T00:00:00Z"}, AuthKind.CHATGPT, id="bare"),
        pytest.param(
            {"auth_mode": None, "tokens": TOKENS, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.CHATGPT,
            id="mode-null",
        ),
        # D5: no usable tokens means no auth
        pytest.param(
            {"auth_mode": "chatgpt", "last_refresh": "2099-01-01T00:00:00Z"}, AuthKind.NONE, id="tokens-missing"
        ),
        pytest.param({"tokens": "x", "last_refresh": "2099-01-01T00:00:00Z"}, AuthKind.NONE, id="tokens-string"),
        pytest.param(
            {"tokens": {**TOKENS, "access_token": None}, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="access-null",
        ),
        pytest.param(
            {"tokens": {"refresh_token": "rt"}, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="access-missing",
        ),
        pytest.param(
            {"tokens": {**TOKENS, "access_token": 7}, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="access-number",
        ),
        pytest.param(
            {"tokens": {**TOKENS, "access_token": ""}, "last_refresh": "2099-01-01T00:00:00Z"},
            AuthKind.NONE,
            id="access-empty",
        ),
        pytest.param({"tokens": TOKENS, "last_refresh": None}, AuthKind.NONE, id="last-refresh-null"),
        pytest.param({"tokens": TOKENS, "last_refresh": "yesterday"}, AuthKind.NONE, id="last-refresh-garbage"),
    ],
)
async def test_classification_edges(content: Any, kind: AuthKind, tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, content)
    store = make_store(tmp_path, server)
    state = store.state()
    assert state.kind is kind
    assert (state.credentials is not None) is (kind is AuthKind.CHATGPT)
    await fresh(store)
    assert server.requests == []


@pytest.mark.parametrize(
    ("claims", "user_id", "plan", "fedramp"),
    [
        ({"chatgpt_user_id": "a", "user_id": "b"}, "a", None, False),
        ({"chatgpt_user_id": None, "user_id": "b"}, "b", None, False),
        ({"user_id": "b", "chatgpt_plan_type": "team"}, "b", "team", False),
        ({"chatgpt_account_is_fedramp": "true"}, None, None, False),  # only JSON true counts
        ({"chatgpt_account_is_fedramp": True}, None, None, True),
    ],
)
async def test_id_token_claims(
    claims: dict[str, Any], user_id: str | None, plan: str | None, fedramp: bool, tmp_path: Path
) -> None:
    auth = chatgpt_auth("at")
    auth["tokens"]["id_token"] = jwt({"https://api.openai.com/auth": claims})
    write_auth(tmp_path, auth)
    creds = make_store(tmp_path, FakeAuthServer()).state().credentials
    assert creds is not None
    assert (creds.user_id, creds.email, creds.plan_type, creds.fedramp) == (user_id, None, plan, fedramp)


async def test_unreadable_id_token_still_gives_credentials(tmp_path: Path) -> None:
    auth = chatgpt_auth("at")
    auth["tokens"]["id_token"] = "not-a-jwt"
    del auth["tokens"]["account_id"]
    write_auth(tmp_path, auth)
    creds = make_store(tmp_path, FakeAuthServer()).state().credentials
    assert creds == ChatgptCredentials("at", None, None, None, None, False)


# -- caching (§8.3) and reload ----------------------------------------------------------------------------------


async def test_state_is_cached_until_reload(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth("first"))
    store = make_store(tmp_path, server)
    assert store.path == tmp_path / "auth.json"
    assert store.state().credentials is not None
    write_auth(tmp_path, chatgpt_auth("second"))
    assert access(store.state()) == "first"
    store.path.unlink()
    assert store.state().kind is AuthKind.CHATGPT
    assert access(await fresh(store)) == "first"
    assert store.reload().kind is AuthKind.NONE
    write_auth(tmp_path, chatgpt_auth("third"))
    assert access(store.reload()) == "third"


# -- when to refresh (§8.4): 41a-41e, 41i -----------------------------------------------------------------------


def upstream_refresh_reason(scenario: transcripts.Transcript) -> str | None:
    bodies = [r["body"] for r in scenario.backend_requests() if r["path"] == "/oauth/token"]
    return json.loads(bodies[0])["refresh_reason"] if bodies else None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("41a_refresh_expired_access_token", "proactive_expiry"),
        ("41b_refresh_access_token_expires_in_2_min", "proactive_expiry"),
        ("41c_no_refresh_access_token_valid_10_min_old_last_refresh", None),
        ("41d_refresh_opaque_token_last_refresh_9_days", "scheduled"),
        ("41e_no_refresh_opaque_token_last_refresh_7_days", None),
    ],
)
async def test_refresh_triggers(name: str, reason: str | None, tmp_path: Path, server: FakeAuthServer) -> None:
    scenario = transcripts.load(name)
    assert upstream_refresh_reason(scenario) == reason
    scenario.write_codex_home(tmp_path, port=1)
    store = make_store(tmp_path, server)
    before = store.state()

    after = await fresh(store)

    if reason is None:
        assert server.requests == []
        assert after == before
        assert mode_of(store.path) == 0o644
    else:
        assert [json.loads(r.content)["refresh_reason"] for r in server.requests] == [reason]
        assert after.credentials is not None
        assert after.credentials.access_token == NEW_ACCESS  # used at once
        assert after.refresh_failure is None
        assert await fresh(store) == after  # the new token is not due: no second request
        assert len(server.requests) == 1


async def test_refresh_window_boundary(tmp_path: Path, server: FakeAuthServer) -> None:
    # 41i: expires 308 s after start, so not due at start; 12 s later it is inside the 5-minute window.
    scenario = transcripts.load("41i_refresh_triggered_by_request")
    scenario.write_codex_home(tmp_path, port=1)
    clock = Clock(1795312607.0 - 308)
    store = make_store(tmp_path, server, clock)
    await fresh(store)
    assert server.requests == []
    clock.now += 8  # exp - now = 300: due (exp <= now + 300)
    await fresh(store)
    assert len(server.requests) == 1


@pytest.mark.parametrize(("age_days", "due"), [(8 - 1 / 86400, False), (8 + 1 / 86400, True), (30, True), (-1, False)])
async def test_scheduled_refresh_age(age_days: float, due: bool, tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth("opaque", last_refresh=format_last_refresh(START - age_days * 86400)))
    store = make_store(tmp_path, server)
    await fresh(store)
    assert len(server.requests) == (1 if due else 0)


async def test_jwt_without_exp_falls_back_to_last_refresh(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"sub": "x"}), last_refresh="2020-01-01T00:00:00Z"))
    await fresh(make_store(tmp_path, server))
    assert [json.loads(r.content)["refresh_reason"] for r in server.requests] == ["scheduled"]


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-22T01:50:37.051181401Z", "2026-11-22T01:50:37.051181+00:00"),
        ("2026-11-22T01:50:37Z", "2026-11-22T01:50:37+00:00"),
        ("2026-11-22t01:50:37.5z", "2026-11-22T01:50:37.500000+00:00"),
        ("2026-11-22T03:50:37.1+02:00", "2026-11-22T01:50:37.100000+00:00"),
        ("2026-11-21T20:20:37-05:30", "2026-11-22T01:50:37+00:00"),
        ("2026-12-31T23:59:60Z", "2026-12-31T23:59:59+00:00"),
    ],
)
def test_parse_rfc3339(text: str, iso: str) -> None:
    parsed = parse_rfc3339(text)
    assert parsed is not None
    assert parsed.astimezone(UTC).isoformat() == iso


@pytest.mark.parametrize("text", ["", "2026-11-22", "2026-11-22T01:50:37", "2026-13-01T00:00:00Z", "x"])
def test_parse_rfc3339_rejects(text: str) -> None:
    assert parse_rfc3339(text) is None


def test_format_last_refresh() -> None:
    assert format_last_refresh(1795312237.051181) == "2026-11-22T01:50:37.051181000Z"
    assert format_last_refresh(1795312237.0) == "2026-11-22T01:50:37.000000000Z"


# -- the request (§8.4) -----------------------------------------------------------------------------------------

EXPECTED_BODY = (
    b'{"client_id":"app_EMoamEEZ73f0CkXaXp7hrann","grant_type":"refresh_token",'
    b'"refresh_reason":"proactive_expiry","refresh_token":"refresh"}'
)


async def test_refresh_request_bytes_and_header_order(tmp_path: Path, server: FakeAuthServer) -> None:
    scenario = transcripts.load("41a_refresh_expired_access_token")
    scenario.write_codex_home(tmp_path, port=1)
    await fresh(make_store(tmp_path, server), ua="probe/0.1 (x) xterm (probe; 1.0)", originator="probe")

    (request,) = server.requests
    assert request.method == "POST"
    assert str(request.url) == REFRESH_URL
    assert request.content == EXPECTED_BODY
    assert request.headers.raw == [
        (b"Host", b"auth.test"),
        (b"content-type", b"application/json"),
        (b"originator", b"probe"),
        (b"user-agent", b"probe/0.1 (x) xterm (probe; 1.0)"),
        (b"accept", b"*/*"),
        (b"Content-Length", b"135"),
    ]


async def test_refresh_request_on_the_wire_matches_upstream(tmp_path: Path) -> None:
    scenario = transcripts.load("41a_refresh_expired_access_token")
    (expected,) = [r for r in scenario.backend_requests() if r["path"] == "/oauth/token"]
    with MockBackend() as backend:
        backend.set_routes({"POST /oauth/token": {"json": {"access_token": NEW_ACCESS}}})
        scenario.write_codex_home(tmp_path, port=backend.port)
        port = str(backend.port)
        async with httpx.AsyncClient() as client:  # httpx defaults left in on purpose
            store = AuthStore(
                tmp_path, refresh_url=f"{backend.base_url}/oauth/token", client=lambda: client, clock=Clock()
            )
            await fresh(store, ua=UPSTREAM_UA, originator="codex_cli_rs")
        (got,) = backend.recorded()
    assert got.method == expected["method"]
    assert got.path == expected["path"]
    assert got.body.decode() == expected["body"]
    upstream = [[k, transcripts.substitute(v, {"<PORT>": port})] for k, v in expected["headers"]]
    # Same headers, values and order, except that h11 always writes host first (RFC 9112 §3.2 "SHOULD").
    host = [h for h in upstream if h[0] == "host"]
    assert got.transcript_headers() == host + [h for h in upstream if h[0] != "host"]


async def test_non_ascii_header_values_do_not_break_the_refresh(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    state = await fresh(make_store(tmp_path, server), ua="prøbe/1.0", originator="prøbe")
    assert state.refresh_failure is None
    assert dict(server.requests[0].headers.raw)[b"originator"] == "prøbe".encode()


# -- the rewrite (§8.4) -----------------------------------------------------------------------------------------


def with_last_refresh(text: str, value: str) -> str:
    return re.sub(r'"last_refresh": "[^"]*"', f'"last_refresh": "{value}"', text)


@pytest.mark.parametrize(
    "name",
    [
        "41a_refresh_expired_access_token",
        "41d_refresh_opaque_token_last_refresh_9_days",
        "41h_refresh_response_with_access_token_only",
        "41i_refresh_triggered_by_request",
    ],
)
async def test_rewrite_matches_upstream_bytes(name: str, tmp_path: Path) -> None:
    scenario = transcripts.load(name)
    (config,) = scenario.backend_configs()
    answer = config["routes"]["POST /oauth/token"]["json"]
    server = FakeAuthServer(answers=[(200, json.dumps(answer).encode())])
    scenario.write_codex_home(tmp_path, port=1)
    assert mode_of(tmp_path / "auth.json") == 0o644
    clock = Clock(START + 3600)  # 41i's token is due an hour later too
    store = make_store(tmp_path, server, clock)

    state = await fresh(store)

    text = store.path.read_text()
    assert text == with_last_refresh(scenario.end["auth_json_after"], format_last_refresh(clock.now))
    assert not text.endswith("\n")
    assert oct(mode_of(store.path)) == scenario.end["auth_json_after_mode"] == "0o600"
    assert state.credentials is not None
    assert state.credentials.access_token == answer["access_token"]
    # The in-memory state is the parse of what was written.
    assert store.reload() == state


async def test_rewrite_keeps_unknown_members_after_known_ones(tmp_path: Path, server: FakeAuthServer) -> None:
    original = {
        "custom_first": {"a": [1, 2]},
        "last_refresh": "2020-01-01T00:00:00Z",
        "tokens": {
            "extra": "kept",
            "account_id": None,
            "refresh_token": "refresh",
            "access_token": "opaque",
            "id_token": "id-old",
        },
        "OPENAI_API_KEY": None,
        "note": "ü",
    }
    write_auth(tmp_path, original, mode=0o640)
    server.answers = [ok(id_token="id-new", access_token="opaque-2", refresh_token="refresh-2")]
    clock = Clock()
    store = make_store(tmp_path, server, clock)

    await fresh(store)

    stamp = format_last_refresh(clock.now)
    expected = (
        '{\n  "OPENAI_API_KEY": null,\n  "tokens": {\n    "id_token": "id-new",\n    "access_token": "opaque-2",\n'
        '    "refresh_token": "refresh-2",\n    "account_id": null,\n    "extra": "kept"\n  },\n'
        f'  "last_refresh": "{stamp}",\n  "custom_first": {{\n    "a": [\n      1,\n      2\n    ]\n  }},\n'
        '  "note": "ü"\n}'
    )
    assert store.path.read_bytes() == expected.encode()
    assert mode_of(store.path) == 0o600
    assert [p.name for p in os.scandir(tmp_path) if p.name.endswith(".tmp")] == []


async def test_rewrite_removes_stale_temp_files(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    stale = tmp_path / ".auth.json.4242.deadbeef.tmp"
    stale.write_text("{")
    await fresh(make_store(tmp_path, server))
    assert not stale.exists()


async def test_write_failure_keeps_the_new_tokens_in_memory(
    tmp_path: Path, server: FakeAuthServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    original = (tmp_path / "auth.json").read_bytes()

    def disk_full(path: Path, data: bytes, **names: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth_module, "write_atomic", disk_full)
    store = make_store(tmp_path, server)
    state = await fresh(store)
    assert state.refresh_failure is None
    assert access(state) == NEW_ACCESS
    assert store.path.read_bytes() == original
    assert "could not be written: OSError" in caplog.text
    assert "refresh-2" not in caplog.text


async def test_missing_codex_home_is_no_auth(tmp_path: Path, server: FakeAuthServer) -> None:
    store = make_store(tmp_path / "absent", server)
    assert (await fresh(store)).kind is AuthKind.NONE
    assert not (tmp_path / "absent").exists()


# -- failures (§8.4) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b'{"error":{"code":"refresh_token_expired","message":"expired"}}'),  # 41f
        (401, b"not json"),
        (400, b'{"error":"invalid_grant"}'),
        (400, b'{"error":{"code":"refresh_token_reused"}}'),
        (403, b'{"error":{"code":"refresh_token_invalidated"}}'),
        (409, b'{"code":"refresh_token_expired"}'),
    ],
)
async def test_permanent_failure_stops_refreshing(status: int, body: bytes, tmp_path: Path) -> None:
    scenario = transcripts.load("41f_refresh_permanent_failure_401")
    scenario.write_codex_home(tmp_path, port=1)
    original = (tmp_path / "auth.json").read_bytes()
    server = FakeAuthServer(answers=[(status, body)])
    store = make_store(tmp_path, server)
    old_token = access(store.state())

    for _ in range(5):
        state = await fresh(store)
        assert state.refresh_failure is RefreshFailure.PERMANENT
        assert state.reauth_required
        assert state.kind is AuthKind.CHATGPT
        assert state.credentials is not None
        assert state.credentials.access_token == old_token  # the request goes ahead with the old token

    assert len(server.requests) == 1
    assert store.path.read_bytes() == original
    assert mode_of(store.path) == 0o644
    assert store.state().refresh_failure is RefreshFailure.PERMANENT
    # reload() of the same tokens keeps the verdict; a new login clears it.
    assert store.reload().refresh_failure is RefreshFailure.PERMANENT
    await fresh(store)
    assert len(server.requests) == 1
    auth = json.loads(original)
    auth["tokens"]["refresh_token"] = "refresh-after-login"
    write_auth(tmp_path, auth)
    reloaded = store.reload()
    assert reloaded.refresh_failure is None
    assert not reloaded.reauth_required
    await fresh(store)
    assert len(server.requests) == 2
    assert json.loads(server.requests[1].content)["refresh_token"] == "refresh-after-login"


@pytest.mark.parametrize(
    "answer",
    [
        (500, b"boom"),  # 41g
        (502, b'{"error":"invalid_grant"}'),
        (429, b"{}"),
        (400, b'{"error":"invalid_request"}'),
        (200, b"not json"),
        (200, b"[]"),
        (200, b'{"access_token": 5}'),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
    ],
    ids=["500", "502", "429", "400-other", "200-invalid-json", "200-array", "200-bad-type", "connect", "timeout"],
)
async def test_transient_failure_is_retried_on_each_call(answer: Answer, tmp_path: Path) -> None:
    scenario = transcripts.load("41g_refresh_transient_failure_500")
    scenario.write_codex_home(tmp_path, port=1)
    original = (tmp_path / "auth.json").read_bytes()
    old_token = json.loads(original)["tokens"]["access_token"]
    server = FakeAuthServer(answers=[answer, answer, answer, ok(access_token=NEW_ACCESS)])
    store = make_store(tmp_path, server)

    for attempt in range(1, 4):
        state = await fresh(store)
        assert len(server.requests) == attempt
        assert state.refresh_failure is RefreshFailure.TRANSIENT
        assert not state.reauth_required
        assert state.credentials is not None
        assert state.credentials.access_token == old_token
        assert store.path.read_bytes() == original

    state = await fresh(store)
    assert state.refresh_failure is None
    assert state.credentials is not None
    assert state.credentials.access_token == NEW_ACCESS
    assert mode_of(store.path) == 0o600


async def test_refresh_timeout_is_transient(tmp_path: Path) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    server = FakeAuthServer(delay=5.0)
    store = make_store(tmp_path, server, timeout=0.2)
    started = time.monotonic()
    state = await fresh(store)
    assert time.monotonic() - started < 2.0
    assert state.refresh_failure is RefreshFailure.TRANSIENT


async def test_missing_refresh_token_is_permanent_without_a_request(tmp_path: Path, server: FakeAuthServer) -> None:
    auth = chatgpt_auth(jwt({"exp": 1}))
    del auth["tokens"]["refresh_token"]
    write_auth(tmp_path, auth)
    store = make_store(tmp_path, server)
    state = await fresh(store)
    assert state.refresh_failure is RefreshFailure.PERMANENT
    assert state.credentials is not None
    assert server.requests == []


async def test_caller_cancellation_does_not_lose_a_rotated_token(tmp_path: Path) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    server = FakeAuthServer(delay=0.3)
    store = make_store(tmp_path, server)
    with anyio.fail_after(WAIT), anyio.move_on_after(0.05) as scope:
        await store.ensure_fresh(user_agent="u", originator="o")
    assert scope.cancel_called
    # The refresh ran to completion regardless: the rotated refresh token is on disk.
    assert json.loads(store.path.read_bytes())["tokens"]["refresh_token"] == "refresh-2"
    assert access(store.state()) == NEW_ACCESS


# -- concurrency and the lock re-read ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", [ok(access_token=NEW_ACCESS, refresh_token="refresh-2"), (500, b"boom")], ids=["success", "transient"]
)
async def test_concurrent_callers_share_one_refresh(answer: Answer, tmp_path: Path) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    server = FakeAuthServer(answers=[answer], delay=0.1)
    store = make_store(tmp_path, server)
    results: list[AuthState] = []

    async def call() -> None:
        results.append(await store.ensure_fresh(user_agent="u", originator="o"))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(call)

    assert len(server.requests) == 1
    assert len(results) == 10
    assert len(set(results)) == 1


async def test_refresh_done_elsewhere_is_adopted_without_a_request(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    store = make_store(tmp_path, server)
    assert store.state().credentials is not None
    # Another process refreshes after our cached read.
    write_auth(tmp_path, chatgpt_auth("refreshed-elsewhere"), mode=0o600)
    state = await fresh(store)
    assert server.requests == []
    assert state.credentials is not None
    assert state.credentials.access_token == "refreshed-elsewhere"


async def test_refresh_uses_the_latest_refresh_token_on_disk(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    store = make_store(tmp_path, server)
    store.state()
    rotated = chatgpt_auth(jwt({"exp": 2}))
    rotated["tokens"]["refresh_token"] = "rotated-elsewhere"
    write_auth(tmp_path, rotated)
    await fresh(store)
    assert [json.loads(r.content)["refresh_token"] for r in server.requests] == ["rotated-elsewhere"]


async def test_refresh_waits_for_the_file_lock(tmp_path: Path, server: FakeAuthServer) -> None:
    write_auth(tmp_path, chatgpt_auth(jwt({"exp": 1})))
    store = make_store(tmp_path, server)
    other = filelock.FileLock(tmp_path / "auth.json.lock", thread_local=False)
    other.acquire()
    try:
        with anyio.move_on_after(0.2):
            await store.ensure_fresh(user_agent="u", originator="o")
        assert server.requests == []  # blocked on the lock, and the event loop stayed responsive
    finally:
        other.release()
    await fresh(store)
    assert len(server.requests) == 1


# -- secrets stay out of logs, messages and reprs ---------------------------------------------------------------

SECRET_ACCESS = jwt({"exp": 1, "sub": "SECRET-ACCESS-a1"})
SECRET_REFRESH = "SECRET-REFRESH-r1"
SECRET_ID = jwt({"email": "u@example.com", "sub": "SECRET-ID-i1"})
SECRET_NEW = "SECRET-NEW-ACCESS-n1"


@pytest.mark.parametrize(
    "answer",
    [
        (200, json.dumps({"access_token": SECRET_NEW, "refresh_token": "SECRET-NEW-REFRESH"}).encode()),
        (401, json.dumps({"error": {"code": SECRET_REFRESH}}).encode()),
        (400, json.dumps({"error": SECRET_REFRESH}).encode()),
        (500, f"bad refresh token {SECRET_REFRESH}".encode()),
        (200, f"{SECRET_NEW} not json".encode()),
        httpx.ConnectError(f"failed {SECRET_REFRESH}"),
    ],
    ids=["success", "401", "400", "500", "invalid-json", "transport"],
)
async def test_no_token_in_logs_or_reprs(answer: Answer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = chatgpt_auth(SECRET_ACCESS)
    auth["tokens"]["refresh_token"] = SECRET_REFRESH
    auth["tokens"]["id_token"] = SECRET_ID
    write_auth(tmp_path, auth)
    server = FakeAuthServer(answers=[answer])
    store = make_store(tmp_path, server)

    state = await fresh(store)
    await fresh(store)

    assert caplog.records, "the refresh should have logged something"
    shown = "\n".join(
        [caplog.text, repr(state), str(state), repr(state.credentials), repr(store), str(store)]
        + [record.getMessage() for record in caplog.records]
    )
    for secret in ("SECRET", SECRET_ACCESS, SECRET_ID):
        assert secret not in shown


# -- several OS processes ---------------------------------------------------------------------------------------


class LineReader:
    """Lines from a child's stdout with a deadline on every wait."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def readline(self, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise TimeoutError(f"no line from the worker within {timeout} s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("worker closed its stdout")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def spawn_worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.auth_worker", *args],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_two_processes_refresh_once(tmp_path: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    scenario = transcripts.load("41a_refresh_expired_access_token")
    new_access = jwt({"exp": time.time() + 86400})
    with MockBackend() as backend:
        backend.set_routes(
            {"POST /oauth/token": {"json": {"access_token": new_access, "refresh_token": "refresh-2"}, "delay": 0.3}}
        )
        scenario.write_codex_home(tmp_path, port=backend.port)
        url = f"{backend.base_url}/oauth/token"
        workers.extend(spawn_worker("refresh", str(tmp_path), url) for _ in range(2))
        readers = [LineReader(proc) for proc in workers]
        for reader in readers:
            assert reader.readline() == "ready"
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        outcomes = [json.loads(reader.readline()) for reader in readers]
        for proc in workers:
            assert proc.wait(timeout=WAIT) == 0
        assert backend.route_calls("POST /oauth/token") == 1
    for outcome in outcomes:
        assert outcome == {"kind": "chatgpt", "access_token": new_access, "refresh_failure": None}
    written = json.loads((tmp_path / "auth.json").read_bytes())
    assert written["tokens"]["access_token"] == new_access
    assert written["tokens"]["refresh_token"] == "refresh-2"
    assert mode_of(tmp_path / "auth.json") == 0o600


def _gen(access_token: str) -> int:
    payload = access_token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["gen"])


def test_a_kill_at_any_point_of_a_rewrite_never_corrupts_auth_json(
    tmp_path: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    """The writer is stopped before each of its system calls in turn (first and second rewrite) and killed there."""
    original = json.dumps(chatgpt_auth(jwt({"exp": 1})), indent=2).encode()
    zygote = spawn_worker("zygote")
    workers.append(zygote)
    reader = LineReader(zygote)
    assert zygote.stdin is not None
    untouched: list[str] = []
    rewritten: list[str] = []
    leftovers: list[str] = []
    in_place = 0  # the generation auth.json holds at the point of the kill (0: the original)
    for rewrite in (1, 2):
        for step in range(100):
            home = tmp_path / f"home-{rewrite}-{step}"
            write_auth(home, original)
            zygote.stdin.write(f"run {home} {rewrite} {step}\n".encode())
            zygote.stdin.flush()
            command, _, pid = reader.readline().partition(" ")
            assert command == "pid"
            paused, _, call = reader.readline().rpartition(" ")
            assert paused == f"paused {step}"
            os.kill(int(pid), signal.SIGKILL)
            zygote.stdin.write(f"reap {pid}\n".encode())
            zygote.stdin.flush()
            assert reader.readline() == "reaped"

            where = f"rewrite {rewrite}, before call {step} ({call})"
            path = home / "auth.json"
            data = path.read_bytes()
            context = f"{where}: {data[:200]!r}"
            if in_place == 0:
                assert data == original, context
                assert mode_of(path) == 0o644, context
                untouched.append(where)
            else:
                doc = json.loads(data)  # always complete JSON
                tokens = doc["tokens"]
                generation = _gen(tokens["access_token"])
                assert generation == in_place, context
                assert tokens["refresh_token"] == f"refresh-{generation}", context
                assert tokens["id_token"] == f"id-{generation}", context
                assert list(doc) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"], context
                assert mode_of(path) == 0o600, context
                rewritten.append(where)
            if any(p.name.endswith(".tmp") for p in home.iterdir()):
                leftovers.append(where)
            if call == "replace":
                in_place = rewrite  # from the next step on, this rewrite's file is in place
            if call == "end":
                break
        else:
            pytest.fail(f"rewrite {rewrite} never ended")
    print(f"\n{len(untouched)} kills left auth.json untouched, {len(rewritten)} rewritten; temp files: {leftovers}")
    # Both outcomes happened, and kills inside a write left temp files that the next writer removes.
    assert untouched and rewritten and leftovers
    assert any("(write)" in where for where in untouched)
