"""The admin API over the simulated pool (alice: 2 saved resets; bob: none; carol: must sign in)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from app_server.dashboard import create_app
from app_server.dashboard._rpc import ServerClosed
from app_server.dashboard.errors import ERROR_CODES
from app_server.pool.errors import ApplyBusy, KeyTaken, UnknownAccount
from app_server.rpc.dispatcher import wire_error
from protocol import ext
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from tests.support.dashboard import BASE, BEARER, TOKEN, api, auth_secrets, consume_calls

pytestmark = pytest.mark.anyio


def key() -> dict[str, str]:
    return {**BEARER, "idempotency-key": str(uuid.uuid4())}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    assert body["error"]["code"] in ERROR_CODES
    assert ERROR_CODES[body["error"]["code"]][0] == response.status_code
    error: dict[str, Any] = body["error"]
    return error


async def test_list_get_refresh_and_history() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            listed = await a.http.get("/api/accounts", headers=BEARER)
            assert listed.status_code == 200
            states = {s["accountId"]: s for s in listed.json()["accounts"]}
            assert list(states) == ["alice", "bob", "carol", "dave"]
            assert states["dave"]["resetAction"]["readiness"] == "available"
            assert states["alice"]["status"] == "rateLimited"
            assert states["alice"]["resetCredits"]["availableCount"] == 2
            assert states["alice"]["resetAction"] == {
                "enabled": True,
                "disabledReason": None,
                "warning": states["alice"]["resetAction"]["warning"],
                "readiness": "exhausted",
            }
            assert states["bob"]["resetAction"]["disabledReason"] == "noCredit"
            assert states["carol"]["status"] == "reauthRequired"
            assert listed.headers["cache-control"] == "no-store"

            cached = await a.http.get("/api/accounts", params={"maxAgeSeconds": 60}, headers=BEARER)
            assert cached.json()["accounts"][0]["refreshedAt"] == states["alice"]["refreshedAt"]

            one = await a.http.get("/api/accounts/bob", headers=BEARER)
            assert one.status_code == 200 and one.json()["accountId"] == "bob"
            missing = await a.http.get("/api/accounts/zed", headers=BEARER)
            assert missing.status_code == 404 and error_of(missing)["code"] == "accountNotFound"

            refreshed = await a.http.post("/api/accounts/bob/refresh", headers=BEARER)
            assert refreshed.status_code == 200 and refreshed.json()["accountId"] == "bob"
            gone = await a.http.post("/api/accounts/zed/refresh", headers=BEARER)
            assert gone.status_code == 404 and error_of(gone)["code"] == "accountNotFound"

            history = await a.http.get("/api/history", headers=BEARER)
            assert history.status_code == 200 and history.json() == {"entries": []}
            bad = await a.http.get("/api/history", params={"limit": "x"}, headers=BEARER)
            assert bad.status_code == 400 and error_of(bad)["code"] == "invalidRequest"
            unknown = await a.http.get("/api/history", params={"accountId": "zed"}, headers=BEARER)
            assert unknown.status_code == 404 and error_of(unknown)["code"] == "accountNotFound"

            assert consume_calls(a.upstream) == 0


async def test_apply_then_replay_returns_the_recorded_result() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            headers = key()
            first = await a.http.post("/api/accounts/alice/usage-reset/apply", headers=headers)
            assert first.status_code == 200, first.text
            result = first.json()
            assert result["outcome"] == "reset" and result["replayed"] is False
            assert result["before"]["resetCredits"]["availableCount"] == 2
            assert result["after"]["resetCredits"]["availableCount"] == 1
            assert first.headers["idempotent-replayed"] == "false"

            again = await a.http.post("/api/accounts/alice/usage-reset/apply", headers=headers)
            assert again.status_code == 200
            assert again.json() == {**result, "replayed": True}
            assert again.headers["idempotent-replayed"] == "true"
            assert consume_calls(a.upstream) == 1

            elsewhere = await a.http.post("/api/accounts/bob/usage-reset/apply", headers=headers)
            assert elsewhere.status_code == 409 and error_of(elsewhere)["code"] == "idempotencyKeyConflict"

            entries = (await a.http.get("/api/history", params={"accountId": "alice"}, headers=BEARER)).json()
            assert [
                (e["idempotencyKey"], e["status"], e["availableBefore"], e["availableAfter"])
                for e in entries["entries"]
            ] == [(headers["idempotency-key"], "finished", 2, 1)]
            assert consume_calls(a.upstream) == 1


async def test_apply_a_named_credit() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            response = await a.http.post(
                "/api/accounts/alice/usage-reset/apply", headers=key(), json={"creditId": "credit-alice-2"}
            )
            assert response.status_code == 200, response.text
            left = response.json()["after"]["resetCredits"]["credits"]
            assert [c["id"] for c in left] == ["credit-alice-1"]


@pytest.mark.parametrize(
    ("account", "reason"), [("bob", "noCredit"), ("carol", "reauthRequired")], ids=["bob", "carol"]
)
async def test_refusals_from_the_pool_spend_nothing(account: str, reason: str) -> None:
    async with api() as a:
        with anyio.fail_after(30):
            response = await a.http.post(f"/api/accounts/{account}/usage-reset/apply", headers=key())
            assert response.status_code == 409
            error = error_of(response)
            assert error["code"] == reason
            assert error["disabledReason"] == reason and error["accountId"] == account
            assert consume_calls(a.upstream) == 0
            assert (await a.http.get("/api/history", headers=BEARER)).json() == {"entries": []}


async def test_the_idempotency_key_limit_is_the_protocols() -> None:
    """A key as long as `accountPool/resetCredit/apply` takes is taken here too (this API stopped one short)."""
    async with api() as a:
        with anyio.fail_after(30):
            longest = "k" * ext.KEY_MAX_LENGTH
            headers = {**BEARER, "idempotency-key": longest}
            applied = await a.http.post("/api/accounts/alice/usage-reset/apply", headers=headers)
            assert applied.status_code == 200, applied.text
            entries = (await a.http.get("/api/history", headers=BEARER)).json()["entries"]
            assert [(e["idempotencyKey"], e["status"]) for e in entries] == [(longest, "finished")]


async def test_apply_request_validation() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            path = "/api/accounts/alice/usage-reset/apply"
            no_key = await a.http.post(path, headers=BEARER)
            assert no_key.status_code == 400 and error_of(no_key)["code"] == "idempotencyKeyRequired"
            long_key = await a.http.post(path, headers={**BEARER, "idempotency-key": "k" * (ext.KEY_MAX_LENGTH + 1)})
            assert long_key.status_code == 400 and error_of(long_key)["code"] == "invalidRequest"
            long_credit = await a.http.post(path, headers=key(), json={"creditId": "c" * (ext.KEY_MAX_LENGTH + 1)})
            assert long_credit.status_code == 400 and error_of(long_credit)["message"] == (
                f"creditId must be at most {ext.KEY_MAX_LENGTH} characters (got {ext.KEY_MAX_LENGTH + 1})"
            )
            form = await a.http.post(path, headers=key(), content=b"creditId=x")
            assert form.status_code == 415 and error_of(form)["code"] == "unsupportedMediaType"
            broken = await a.http.post(path, headers={**key(), "content-type": "application/json"}, content=b"{")
            assert broken.status_code == 400
            extra = await a.http.post(path, headers=key(), json={"creditId": "x", "force": True})
            assert extra.status_code == 400 and "force" in error_of(extra)["message"]
            empty = await a.http.post(path, headers=key(), json={"creditId": ""})
            assert empty.status_code == 400
            huge = await a.http.post(path, headers=key(), json={"creditId": "x" * 70_000})
            assert huge.status_code == 413 and error_of(huge)["code"] == "payloadTooLarge"
            unknown_credit = await a.http.post(path, headers=key(), json={"creditId": "credit-nope"})
            assert unknown_credit.status_code == 409 and error_of(unknown_credit)["code"] == "unknownCredit"
            assert error_of(unknown_credit)["availableCreditIds"] == ["credit-alice-1", "credit-alice-2"]
            wrong_method = await a.http.get(path, headers=BEARER)
            assert wrong_method.status_code == 405 and error_of(wrong_method)["code"] == "methodNotAllowed"
            assert consume_calls(a.upstream) == 0


async def test_authentication() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            anonymous = await a.http.get("/api/accounts")
            assert anonymous.status_code == 401 and error_of(anonymous)["code"] == "unauthorized"
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            wrong = await a.http.get("/api/accounts", headers={"authorization": "Bearer " + TOKEN[:-1] + "x"})
            assert wrong.status_code == 401
            basic = await a.http.get("/api/accounts", headers={"authorization": "Basic " + TOKEN})
            assert basic.status_code == 401
            events = await a.http.get("/api/events")
            assert events.status_code == 401

            code = a.gate.issue_login_code()
            login = await a.http.get("/login", params={"code": code})
            assert login.status_code == 303 and login.headers["location"] == "/"
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
            assert (await a.http.get("/api/accounts")).status_code == 200
            reused = await httpx.AsyncClient(transport=a.http._transport, base_url=BASE).get(
                "/login", params={"code": code}
            )
            assert reused.status_code == 403
            session = (await a.http.get("/api/session")).json()
            assert session["authenticatedBy"] == "session" and len(session["csrfToken"]) >= 32

            # A page session cannot mint login links; the admin token can.
            minted = await a.http.post(
                "/api/login-links", headers={"origin": BASE, "x-csrf-token": session["csrfToken"]}
            )
            assert minted.status_code == 403 and error_of(minted)["code"] == "forbidden"
            link = await httpx.AsyncClient(transport=a.http._transport, base_url=BASE).post(
                "/api/login-links", headers=BEARER
            )
            assert link.status_code == 201 and "/login?code=" in link.json()["url"]

            out = await a.http.post("/api/logout", headers={"origin": BASE, "x-csrf-token": session["csrfToken"]})
            assert out.status_code == 204
            assert (await a.http.get("/api/accounts")).status_code == 401


async def test_cross_origin_or_csrf_less_posts_are_refused_and_spend_nothing() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            csrf = await a.sign_in()
            path = "/api/accounts/alice/usage-reset/apply"
            idem = {"idempotency-key": str(uuid.uuid4())}
            attempts = {
                "cross-origin": {**idem, "origin": "http://evil.example", "x-csrf-token": csrf},
                "cross-site fetch": {**idem, "sec-fetch-site": "cross-site", "x-csrf-token": csrf},
                "no origin at all": {**idem, "x-csrf-token": csrf},
                "no CSRF token": {**idem, "origin": BASE},
                "wrong CSRF token": {**idem, "origin": BASE, "x-csrf-token": csrf[:-2] + "xx"},
            }
            for what, headers in attempts.items():
                for target in (path, "/api/accounts/alice/refresh"):
                    response = await a.http.post(target, headers=headers)
                    assert response.status_code == 403, what
                    assert error_of(response)["code"] in ("crossOrigin", "csrfTokenInvalid"), what
            bearer_cross = await a.http.post(path, headers={**key(), "origin": "http://evil.example"})
            assert bearer_cross.status_code == 403 and error_of(bearer_cross)["code"] == "crossOrigin"

            assert consume_calls(a.upstream) == 0
            assert (await a.http.get("/api/history")).json() == {"entries": []}

            ok = await a.http.post(path, headers={**idem, "origin": BASE, "x-csrf-token": csrf})
            assert ok.status_code == 200 and ok.json()["outcome"] == "reset"
            same_site = await a.http.post(
                "/api/accounts/bob/refresh", headers={"sec-fetch-site": "same-origin", "x-csrf-token": csrf}
            )
            assert same_site.status_code == 200
            assert consume_calls(a.upstream) == 1


async def test_hosts_headers_and_page() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            rebound = await a.http.get("/api/accounts", headers={**BEARER, "host": "evil.example"})
            assert rebound.status_code == 400 and error_of(rebound)["code"] == "invalidHost"
            assert (await a.http.get("/api/accounts", headers={**BEARER, "host": "localhost:9"})).status_code == 200
            page = await a.http.get("/")
            assert page.status_code == 200
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert "<script>" not in page.text and " style=" not in page.text
            for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
                response = await a.http.get(asset)
                assert response.status_code == 200, asset
                assert "content-security-policy" in response.headers
            missing = await a.http.get("/nowhere")
            assert missing.status_code == 404 and error_of(missing)["code"] == "notFound"
            bad_link = await a.http.get("/login", params={"code": "guess"})
            assert bad_link.status_code == 403 and "set-cookie" not in bad_link.headers


async def test_openapi_document() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            response = await a.http.get("/api/openapi.json")
            assert response.status_code == 200
            doc = response.json()
            assert doc["openapi"].startswith("3.1")
            assert set(doc["paths"]) >= {
                "/api/accounts",
                "/api/accounts/{account_id}",
                "/api/accounts/{account_id}/refresh",
                "/api/accounts/{account_id}/usage-reset/apply",
                "/api/history",
                "/api/reset-credits",
                "/api/forecasts",
                "/api/events",
                "/api/openapi.json",
            }
            schemas = doc["components"]["schemas"]
            assert "AccountSummary" in schemas and "ErrorEnvelope" in schemas

            def refs(node: Any) -> list[str]:
                if isinstance(node, dict):
                    own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
                    return own + [r for v in node.values() for r in refs(v)]
                if isinstance(node, list):
                    return [r for v in node for r in refs(v)]
                return []

            for ref in refs(doc):
                assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
            apply = doc["paths"]["/api/accounts/{account_id}/usage-reset/apply"]["post"]
            assert any(p["name"] == "Idempotency-Key" and p["required"] for p in apply["parameters"])
            assert "409" in apply["responses"]


async def test_nothing_from_auth_json_leaves() -> None:
    async with api() as a:
        with anyio.fail_after(30):
            secrets = auth_secrets(a.pool.homes)
            assert len(secrets) == 3 * len(list(a.pool.homes.glob("*/auth.json")))  # id, access, refresh tokens
            csrf = await a.sign_in()
            bodies = [
                await a.http.get("/api/accounts"),
                await a.http.get("/api/accounts/carol"),
                await a.http.post("/api/accounts/alice/refresh", headers={"origin": BASE, "x-csrf-token": csrf}),
                await a.http.post(
                    "/api/accounts/alice/usage-reset/apply",
                    headers={"origin": BASE, "x-csrf-token": csrf, "idempotency-key": "k-1"},
                ),
                await a.http.post(
                    "/api/accounts/carol/usage-reset/apply",
                    headers={"origin": BASE, "x-csrf-token": csrf, "idempotency-key": "k-2"},
                ),
                await a.http.get("/api/history"),
                await a.http.get("/api/session"),
                await a.http.get("/"),
                await a.http.get("/static/app.js"),
            ]
            text = "\n".join(r.text + str(r.headers) for r in bodies)
            for secret in secrets:
                assert secret not in text
            assert TOKEN not in text


# -- the RpcError -> HTTP table, with a scripted RPC client ---------------------------------------


class ScriptedRpc:
    """An `RpcClient` whose every request fails with `failure` (or hangs when it is None)."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.calls: list[tuple[str, Any]] = []
        send, self._notes = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._send = send

    @property
    def notifications(self) -> Any:
        return self._notes

    async def request(self, method: str, params: Any = None) -> Any:
        self.calls.append((method, params))
        if self.failure is None:
            await anyio.sleep_forever()
        assert self.failure is not None
        raise self.failure


def refused(reason: str, pending: str | None = None) -> RpcError:
    data = {"accountId": "alice", "disabledReason": reason, "pendingIdempotencyKey": pending}
    return RpcError(INVALID_REQUEST, f"cannot apply a saved reset on account 'alice': {reason}", data)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (refused("noCredit"), 409, "noCredit"),
        (refused("reauthRequired"), 409, "reauthRequired"),
        (refused("unsupported"), 409, "unsupported"),
        (refused("unavailable"), 409, "unavailable"),
        (refused("pendingApply", "earlier-key"), 409, "pendingApply"),
        (refused("unknownCredit"), 409, "unknownCredit"),
        (refused("somethingNew"), 409, "applyRefused"),
        (wire_error(UnknownAccount("alice", ["bob"]), 1), 404, "accountNotFound"),
        (wire_error(ApplyBusy("alice", 30), 1), 409, None),
        (wire_error(KeyTaken("k", "bob"), 1), 409, "idempotencyKeyConflict"),
        (RpcError(INVALID_REQUEST, "idempotencyKey must not be empty"), 400, "invalidRequest"),
        (RpcError(INTERNAL_ERROR, "failed to consume rate limit reset: HTTP 500"), 502, "upstreamError"),
        (
            RpcError(
                INTERNAL_ERROR,
                "consume timed out; outcome unknown",
                {"accountId": "alice", "idempotencyKey": "k-unknown", "outcome": "unknown"},
            ),
            502,
            "outcomeUnknown",
        ),
        (ServerClosed("server closed"), 503, "serviceUnavailable"),
        (
            ServerClosed(
                "server closed",
                method="accountPool/resetCredit/apply",
                params={"accountId": "alice", "idempotencyKey": "k-unknown"},
            ),
            502,
            "outcomeUnknown",
        ),
        (None, 504, "timeout"),
    ],
)
async def test_rpc_errors_map_to_stable_codes(failure: BaseException | None, status: int, code: str | None) -> None:
    rpc = ScriptedRpc(failure)
    app = create_app(rpc, token=TOKEN, request_timeout=0.2)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http,
    ):
        with anyio.fail_after(10):
            response = await http.post("/api/accounts/alice/usage-reset/apply", headers=key(), json={"creditId": "c1"})
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == (code or "applyInProgress")
    assert rpc.calls == [
        (
            "accountPool/resetCredit/apply",
            {"accountId": "alice", "idempotencyKey": rpc.calls[0][1]["idempotencyKey"], "creditId": "c1"},
        )
    ]
    if isinstance(failure, RpcError) and isinstance(failure.data, dict) and "disabledReason" in failure.data:
        assert error["disabledReason"] == failure.data["disabledReason"]
        assert error["pendingIdempotencyKey"] == failure.data["pendingIdempotencyKey"]
    if code == "timeout":
        assert "same Idempotency-Key" in error["message"]
    if code == "outcomeUnknown":
        # Never "nothing happened": the key that settles it travels with the error.
        assert error["idempotencyKey"] == "k-unknown"


async def chunks(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    """A body sent in chunks, without Content-Length."""
    for _ in range(count):
        yield chunk


async def test_malformed_bodies_are_400s_and_spend_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Deep nesting and lone surrogates used to leave as a plain-text 500 (RecursionError, UnicodeEncodeError)."""
    json_type = {"content-type": "application/json"}
    async with api() as a:
        with anyio.fail_after(30):
            path = "/api/accounts/alice/usage-reset/apply"
            for body, says in (
                (b"[" * 65_000, "nested too deeply"),
                (b'{"creditId": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deeply"),
                (b'{"creditId": "\\ud800"}', "lone surrogate"),
                (b'{"\\udfff": "credit-alice-1"}', "lone surrogate"),
                (b'["creditId"]', "must be a JSON object"),
                (b'"creditId"', "must be a JSON object"),
                (b"\xff\xfe{}", "not valid JSON"),
            ):
                answer = await a.http.post(path, headers={**key(), **json_type}, content=body)
                assert answer.status_code == 400, body[:40]
                assert answer.headers["content-type"] == "application/json"
                error = error_of(answer)
                assert error["code"] == "invalidRequest" and says in error["message"], error
            no_length = await a.http.post(path, headers={**key(), **json_type}, content=chunks(b"[" * 40_000, 2))
            assert no_length.status_code == 413 and error_of(no_length)["code"] == "payloadTooLarge"
            text = await a.http.post(
                path, headers={**key(), "content-type": "text/plain"}, content=b'{"creditId": "x"}'
            )
            assert text.status_code == 415 and error_of(text)["code"] == "unsupportedMediaType"
            assert consume_calls(a.upstream) == 0
            listed = await a.http.get("/api/accounts", headers=BEARER)  # still serving
            assert listed.status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_bug_answers_the_json_envelope_not_plain_text() -> None:
    app = create_app(ScriptedRpc(RuntimeError("a bug")), token=TOKEN)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        with anyio.fail_after(10):
            response = await http.get("/api/accounts", headers=BEARER)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == "internalError"
