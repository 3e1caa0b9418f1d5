"""Tests for the simulated ChatGPT backend behind `serve --simulate` and `demo`."""

from __future__ import annotations

import base64
import http.client
import json
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app_server.sim.upstream import (
    ACCESS_TOKEN_LIFETIME_SECONDS,
    PRIMARY_WINDOW_SECONDS,
    SECONDARY_WINDOW_SECONDS,
    SimulatedUpstream,
    make_unsigned_jwt,
)

TIMEOUT = httpx.Timeout(5.0)
T0 = 1_790_000_000
DAY = 86_400
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 0.25)


@pytest.fixture
def upstream(clock: FakeClock) -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(now=clock) as sim:
        yield sim


@pytest.fixture
def client(upstream: SimulatedUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.base_url, timeout=TIMEOUT) as c:
        yield c


def jwt_claims(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))) == {
        "alg": "none",
        "typ": "JWT",
    }
    assert signature == "c2ln"
    assert "=" not in header + payload
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def token_of(upstream: SimulatedUpstream, key: str) -> str:
    return upstream.accounts[key].access_token


def auth_headers(upstream: SimulatedUpstream, key: str) -> dict[str, str]:
    account = upstream.accounts[key]
    return {"authorization": f"Bearer {account.access_token}", "chatgpt-account-id": account.account_id}


def usage(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.get("/api/codex/usage", headers=headers, timeout=TIMEOUT)


def details(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.get("/api/codex/rate-limit-reset-credits", headers=headers, timeout=TIMEOUT)


def consume(client: httpx.Client, headers: dict[str, str], key: str, credit_id: str | None = None) -> httpx.Response:
    body: dict[str, str] = {"redeem_request_id": key}
    if credit_id is not None:
        body["credit_id"] = credit_id
    return client.post("/api/codex/rate-limit-reset-credits/consume", headers=headers, json=body, timeout=TIMEOUT)


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    body = {
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_reason": "proactive_expiry",
        "refresh_token": refresh_token,
    }
    return client.post("/oauth/token", json=body, timeout=TIMEOUT)


# --------------------------------------------------------------------------- codex homes


def test_write_codex_homes_writes_config_and_private_auth_json(upstream: SimulatedUpstream, tmp_path: Path) -> None:
    homes = upstream.write_codex_homes(tmp_path)

    assert set(homes) == {"alice", "bob", "carol"}
    for key, home in homes.items():
        account = upstream.accounts[key]
        assert home == tmp_path / key
        config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
        assert config == {"chatgpt_base_url": upstream.base_url}
        assert upstream.base_url.startswith("http://127.0.0.1:")

        auth_path = home / "auth.json"
        assert stat.S_IMODE(auth_path.stat().st_mode) == 0o600
        text = auth_path.read_text(encoding="utf-8")
        assert not text.endswith("\n")
        auth = json.loads(text)
        assert list(auth) == ["auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"]
        assert auth["auth_mode"] == "chatgpt"
        assert auth["OPENAI_API_KEY"] is None
        assert list(auth["tokens"]) == ["id_token", "access_token", "refresh_token", "account_id"]
        assert auth["tokens"]["account_id"] == account.account_id
        assert auth["tokens"]["access_token"] == account.access_token
        assert auth["tokens"]["refresh_token"] == account.refresh_token
        assert auth["last_refresh"].endswith("Z")

        id_claims = jwt_claims(auth["tokens"]["id_token"])
        assert id_claims == {
            "email": account.email,
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": account.plan_type,
                "chatgpt_account_id": account.account_id,
                "chatgpt_user_id": account.user_id,
            },
        }

    alice_exp = jwt_claims(upstream.accounts["alice"].access_token)["exp"]
    bob_exp = jwt_claims(upstream.accounts["bob"].access_token)["exp"]
    carol_exp = jwt_claims(upstream.accounts["carol"].access_token)["exp"]
    assert alice_exp == bob_exp == T0 + ACCESS_TOKEN_LIFETIME_SECONDS
    assert carol_exp < T0


def test_write_codex_homes_tightens_an_existing_auth_json(upstream: SimulatedUpstream, tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    stale = tmp_path / "alice" / "auth.json"
    stale.write_text("{}", encoding="utf-8")
    stale.chmod(0o644)

    upstream.write_codex_homes(tmp_path)

    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
    assert json.loads(stale.read_text(encoding="utf-8"))["tokens"]["account_id"] == "acct-sim-alice"


def test_write_codex_homes_needs_a_running_server(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        SimulatedUpstream().write_codex_homes(tmp_path)


# --------------------------------------------------------------------------- usage and details


def test_usage_alice_is_exhausted_with_two_saved_resets(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    response = usage(client, auth_headers(upstream, "alice"))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == [
        "plan_type",
        "user_id",
        "account_id",
        "email",
        "rate_limit",
        "credits",
        "rate_limit_reset_credits",
        "rate_limit_reached_type",
    ]
    assert body["plan_type"] == "pro"
    assert body["user_id"] == "user-sim-alice"
    assert body["account_id"] == "acct-sim-alice"
    assert body["email"] == "alice@example.com"
    rate_limit = body["rate_limit"]
    assert rate_limit["allowed"] is False
    assert rate_limit["limit_reached"] is True
    primary, secondary = rate_limit["primary_window"], rate_limit["secondary_window"]
    assert primary["used_percent"] == 100
    assert primary["limit_window_seconds"] == PRIMARY_WINDOW_SECONDS
    assert primary["reset_at"] > T0
    assert primary["reset_after_seconds"] == primary["reset_at"] - T0
    assert secondary["used_percent"] == 92
    assert secondary["limit_window_seconds"] == SECONDARY_WINDOW_SECONDS
    assert secondary["reset_after_seconds"] == secondary["reset_at"] - T0
    for window in (primary, secondary):
        assert all(isinstance(v, int) for v in window.values())
    assert body["credits"] == {"has_credits": False, "unlimited": False, "balance": "0"}
    assert body["rate_limit_reset_credits"] == {"available_count": 2}
    assert body["rate_limit_reached_type"] == {"type": "rate_limit_reached"}


def test_usage_bob_has_headroom_and_no_resets(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    body = usage(client, auth_headers(upstream, "bob")).json()

    assert body["plan_type"] == "plus"
    assert body["account_id"] == "acct-sim-bob"
    assert body["rate_limit"]["allowed"] is True
    assert body["rate_limit"]["limit_reached"] is False
    assert body["rate_limit"]["primary_window"]["used_percent"] == 35
    assert body["rate_limit"]["secondary_window"]["used_percent"] == 12
    assert body["rate_limit_reset_credits"] == {"available_count": 0}
    assert body["rate_limit_reached_type"] is None


def test_details_alice_lists_available_credits_soonest_expiry_first(
    upstream: SimulatedUpstream, client: httpx.Client
) -> None:
    response = details(client, auth_headers(upstream, "alice"))

    assert response.status_code == 200
    body = response.json()
    assert body["available_count"] == 2
    credits = body["credits"]
    assert [c["id"] for c in credits] == ["credit-alice-1", "credit-alice-2"]
    assert [c["expires_at"] for c in credits] == [
        "2026-09-28T14:13:20Z",  # T0 + 7 days
        "2026-10-12T14:13:20Z",  # T0 + 21 days
    ]
    for credit in credits:
        assert list(credit) == [
            "id",
            "reset_type",
            "status",
            "granted_at",
            "expires_at",
            "title",
            "description",
        ]
        assert credit["reset_type"] == "codex_rate_limits"
        assert credit["status"] == "available"
        assert credit["title"] == "Full reset"
        assert isinstance(credit["description"], str)
        assert credit["granted_at"] < "2026-09-21T14:13:20Z"  # granted before T0


def test_details_bob_is_empty(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    body = details(client, auth_headers(upstream, "bob")).json()

    assert body["available_count"] == 0
    assert body["credits"] == []


@pytest.mark.parametrize("call", ["usage", "details", "consume"])
def test_carol_expired_access_token_is_rejected(upstream: SimulatedUpstream, client: httpx.Client, call: str) -> None:
    headers = auth_headers(upstream, "carol")
    if call == "usage":
        response = usage(client, headers)
    elif call == "details":
        response = details(client, headers)
    else:
        response = consume(client, headers, "carol-key")

    assert response.status_code == 401
    assert response.json() == {"error": {"message": "token expired", "code": "token_expired"}}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"authorization": "Basic abc"}, "missing_token"),
        ({"authorization": "Bearer not-a-known-token"}, "invalid_token"),
    ],
)
def test_missing_or_unknown_token_is_401(client: httpx.Client, headers: dict[str, str], code: str) -> None:
    response = usage(client, headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


def test_account_id_header_must_match_the_token(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    headers = auth_headers(upstream, "alice") | {"chatgpt-account-id": "acct-sim-bob"}

    response = usage(client, headers)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_mismatch"


def test_account_id_header_is_optional(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    response = usage(client, {"authorization": f"Bearer {token_of(upstream, 'bob')}"})

    assert response.status_code == 200
    assert response.json()["account_id"] == "acct-sim-bob"


# --------------------------------------------------------------------------- consume


def test_consume_flow_on_alice(upstream: SimulatedUpstream, client: httpx.Client, clock: FakeClock) -> None:
    alice = auth_headers(upstream, "alice")
    clock.now = T0 + 100

    first = consume(client, alice, "key-1")
    assert first.status_code == 200
    assert first.json()["code"] == "reset"
    assert first.json()["windows_reset"] == 2
    after = usage(client, alice).json()
    assert after["rate_limit"]["primary_window"]["used_percent"] == 0
    assert after["rate_limit"]["secondary_window"]["used_percent"] == 0
    assert after["rate_limit"]["primary_window"]["reset_at"] == T0 + 100 + PRIMARY_WINDOW_SECONDS
    assert after["rate_limit"]["secondary_window"]["reset_at"] == T0 + 100 + SECONDARY_WINDOW_SECONDS
    assert after["rate_limit"]["allowed"] is True
    assert after["rate_limit"]["limit_reached"] is False
    assert after["rate_limit_reached_type"] is None
    assert after["rate_limit_reset_credits"] == {"available_count": 1}
    remaining = details(client, alice).json()
    assert remaining["available_count"] == 1
    # the credit expiring soonest was spent
    assert [c["id"] for c in remaining["credits"]] == ["credit-alice-2"]

    again = consume(client, alice, "key-1")
    assert again.json() == {"code": "already_redeemed"}
    assert usage(client, alice).json()["rate_limit_reset_credits"] == {"available_count": 1}

    # windows are empty now, so a fresh key has nothing to reset and spends nothing
    idle = consume(client, alice, "key-idle")
    assert idle.json() == {"code": "nothing_to_reset"}
    assert upstream.available_credit_count("alice") == 1

    upstream.set_usage("alice", primary=40)
    second = consume(client, alice, "key-2")
    assert second.json()["code"] == "reset"
    assert second.json()["windows_reset"] == 1
    assert usage(client, alice).json()["rate_limit_reset_credits"] == {"available_count": 0}
    assert details(client, alice).json() == {"available_count": 0, "total_earned_count": 2, "credits": []}

    upstream.set_usage("alice", primary=10, secondary=10)
    third = consume(client, alice, "key-3")
    assert third.json() == {"code": "no_credit"}
    # an earlier non-reset outcome is repeated for its key
    assert consume(client, alice, "key-idle").json() == {"code": "nothing_to_reset"}
    assert consume(client, alice, "key-2").json() == {"code": "already_redeemed"}


def test_consume_reset_body_describes_the_spent_credit(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    body = consume(client, auth_headers(upstream, "alice"), "k", credit_id="credit-alice-2").json()

    assert list(body) == ["code", "windows_reset", "credit"]
    assert body["credit"]["id"] == "credit-alice-2"
    assert body["credit"]["status"] == "redeemed"
    assert [c["id"] for c in details(client, auth_headers(upstream, "alice")).json()["credits"]] == ["credit-alice-1"]


def test_consume_unknown_or_spent_credit_id_is_no_credit(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    alice = auth_headers(upstream, "alice")

    assert consume(client, alice, "a", credit_id="no-such-credit").json() == {"code": "no_credit"}
    assert consume(client, alice, "b", credit_id="credit-alice-1").json()["code"] == "reset"
    upstream.set_usage("alice", primary=50)
    assert consume(client, alice, "c", credit_id="credit-alice-1").json() == {"code": "no_credit"}
    assert upstream.available_credit_count("alice") == 1


def test_consume_on_bob_is_no_credit(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    response = consume(client, auth_headers(upstream, "bob"), "bob-key")

    assert response.status_code == 200
    assert response.json() == {"code": "no_credit"}
    assert usage(client, auth_headers(upstream, "bob")).json()["rate_limit"]["primary_window"]["used_percent"] == 35


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"redeem_request_id":""}',
        b'{"redeem_request_id":5}',
        b'{"redeem_request_id":"k","credit_id":7}',
    ],
)
def test_consume_rejects_invalid_bodies(upstream: SimulatedUpstream, client: httpx.Client, content: bytes) -> None:
    headers = auth_headers(upstream, "alice") | {"content-type": "application/json"}

    response = client.post(
        "/api/codex/rate-limit-reset-credits/consume", headers=headers, content=content, timeout=TIMEOUT
    )

    assert response.status_code == 400
    assert "code" in response.json()["error"]
    assert upstream.available_credit_count("alice") == 2


def test_consume_accepts_non_ascii_keys(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    alice = auth_headers(upstream, "alice")

    assert consume(client, alice, "clé-中-😀").json()["code"] == "reset"
    assert consume(client, alice, "clé-中-😀").json() == {"code": "already_redeemed"}


# --------------------------------------------------------------------------- token refresh


def test_refresh_alice_rotates_tokens_and_the_new_token_works(
    upstream: SimulatedUpstream, client: httpx.Client, clock: FakeClock
) -> None:
    old_access = upstream.accounts["alice"].access_token
    old_refresh = upstream.accounts["alice"].refresh_token
    clock.now = T0 + 3_600

    response = refresh(client, old_refresh)

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id_token", "access_token", "refresh_token"]
    assert body["access_token"] != old_access
    assert body["refresh_token"] != old_refresh
    assert jwt_claims(body["access_token"])["exp"] == T0 + 3_600 + ACCESS_TOKEN_LIFETIME_SECONDS
    assert jwt_claims(body["id_token"])["https://api.openai.com/auth"]["chatgpt_account_id"] == "acct-sim-alice"
    assert upstream.accounts["alice"].access_token == body["access_token"]
    assert upstream.accounts["alice"].refresh_token == body["refresh_token"]

    new_headers = {"authorization": f"Bearer {body['access_token']}", "chatgpt-account-id": "acct-sim-alice"}
    fresh = usage(client, new_headers)
    assert fresh.status_code == 200
    assert fresh.json()["account_id"] == "acct-sim-alice"

    reused = refresh(client, old_refresh)
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    assert refresh(client, body["refresh_token"]).status_code == 200


def test_refresh_carol_fails_permanently(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    carol = upstream.accounts["carol"]
    access_before = carol.access_token

    response = refresh(client, carol.refresh_token)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "refresh_token_expired"
    assert isinstance(response.json()["error"]["message"], str)
    assert carol.access_token == access_before
    assert usage(client, auth_headers(upstream, "carol")).status_code == 401


def test_refresh_rejects_unknown_tokens_and_bad_requests(client: httpx.Client) -> None:
    unknown = refresh(client, "sim-refresh-nobody")
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_grant"

    wrong_grant = client.post("/oauth/token", json={"grant_type": "password", "refresh_token": "x"}, timeout=TIMEOUT)
    assert wrong_grant.status_code == 400

    not_json = client.post("/oauth/token", content=b"nope", timeout=TIMEOUT)
    assert not_json.status_code == 400


def test_refresh_url_points_at_the_token_endpoint(upstream: SimulatedUpstream) -> None:
    assert upstream.refresh_url == upstream.base_url + "/oauth/token"


# --------------------------------------------------------------------------- time, routing, transport


def test_windows_roll_over_and_credits_expire_with_the_clock(
    upstream: SimulatedUpstream, client: httpx.Client, clock: FakeClock
) -> None:
    bob = auth_headers(upstream, "bob")
    primary_reset = usage(client, bob).json()["rate_limit"]["primary_window"]["reset_at"]

    clock.now = primary_reset + 1
    rolled = usage(client, bob).json()["rate_limit"]
    assert rolled["primary_window"]["used_percent"] == 0
    assert rolled["primary_window"]["reset_at"] == primary_reset + 1 + PRIMARY_WINDOW_SECONDS
    assert rolled["secondary_window"]["used_percent"] == 12

    clock.now = T0 + 8 * DAY
    alice = auth_headers(upstream, "alice")
    assert details(client, alice).json()["available_count"] == 1
    assert usage(client, alice).json()["rate_limit"]["secondary_window"]["used_percent"] == 0


def test_backend_api_style_paths_are_served(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    response = client.get("/backend-api/wham/usage", headers=auth_headers(upstream, "bob"), timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.json()["plan_type"] == "plus"


def test_unknown_path_and_wrong_method(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    headers = auth_headers(upstream, "bob")

    missing = client.get("/api/codex/nope", headers=headers, timeout=TIMEOUT)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"

    wrong = client.post("/api/codex/usage", headers=headers, json={}, timeout=TIMEOUT)
    assert wrong.status_code == 405
    assert client.get("/oauth/token", timeout=TIMEOUT).status_code == 405


def test_requests_are_recorded_with_lowercase_headers(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    consume(client, auth_headers(upstream, "bob"), "recorded-key")

    last = upstream.recorded_requests()[-1]
    assert last.method == "POST"
    assert last.path == "/api/codex/rate-limit-reset-credits/consume"
    assert last.headers["chatgpt-account-id"] == "acct-sim-bob"
    assert json.loads(last.body) == {"redeem_request_id": "recorded-key"}


def test_keep_alive_serves_several_requests_on_one_connection(upstream: SimulatedUpstream) -> None:
    host, port = upstream.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        headers = auth_headers(upstream, "bob")
        conn.request("GET", "/api/codex/usage", headers=headers)
        first = conn.getresponse()
        assert first.status == 200
        assert int(first.headers["content-length"]) == len(first.read())
        sock = conn.sock
        assert sock is not None

        body = json.dumps({"redeem_request_id": "ka"})
        conn.request("POST", "/api/codex/rate-limit-reset-credits/consume", body=body, headers=headers)
        second = conn.getresponse()
        assert json.loads(second.read()) == {"code": "no_credit"}
        assert conn.sock is sock
    finally:
        conn.close()


def test_chunked_request_bodies_are_read(upstream: SimulatedUpstream, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"redeem_request_id":'
        yield b'"chunked-key"}'

    response = client.post(
        "/api/codex/rate-limit-reset-credits/consume",
        headers=auth_headers(upstream, "alice"),
        content=chunks(),
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    assert response.json()["code"] == "reset"


def test_handle_request_works_without_http(clock: FakeClock) -> None:
    sim = SimulatedUpstream(now=clock)
    headers = {"Authorization": f"Bearer {sim.accounts['alice'].access_token}"}

    status, body = sim.handle_request("GET", "/api/codex/usage?x=1", headers, b"")

    assert status == 200
    assert body["rate_limit_reset_credits"] == {"available_count": 2}


def test_stop_closes_the_port() -> None:
    sim = SimulatedUpstream()
    sim.start()
    base_url = sim.base_url
    with httpx.Client(timeout=TIMEOUT) as c:
        assert c.get(base_url + "/api/codex/usage", timeout=TIMEOUT).status_code == 401
        sim.stop()
        with pytest.raises(httpx.TransportError):
            c.get(base_url + "/api/codex/usage", timeout=TIMEOUT)
    sim.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_make_unsigned_jwt_round_trips() -> None:
    token = make_unsigned_jwt({"exp": 5, "email": "é@example.com"})

    assert token.startswith("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.")
    assert jwt_claims(token) == {"exp": 5, "email": "é@example.com"}
