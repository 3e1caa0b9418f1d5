"""The admin API and the page's own endpoints: thin over the `accountPool/*` JSON-RPC methods.

Each endpoint checks who is asking (`authorize`), turns the HTTP request into the params of one
RPC method, and returns the method's result validated through its protocol model (so only the
model's fields, none of which is a credential, can leave). Every failure is an `ApiError` and
leaves as the error envelope.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from app_server.dashboard import openapi
from app_server.dashboard._rpc import RpcClient, ServerClosed
from app_server.dashboard.errors import ApiError, error_response, from_closed, from_rpc
from app_server.dashboard.events import EventHub, TooManySubscribers
from app_server.dashboard.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Gate,
    Principal,
    cross_site,
    proven_same_origin,
    request_origin,
)
from protocol import ext
from protocol.jsonrpc import RpcError
from protocol.methods import (
    POOL_APPLY,
    POOL_FORECAST,
    POOL_HISTORY,
    POOL_LIST,
    POOL_REFRESH,
    POOL_RESET_CREDITS_LIST,
)
from protocol.validation import check_key_length

STATIC_DIR: Final = Path(__file__).parent / "static"
REQUEST_TIMEOUT: Final = 120.0
"""Seconds one RPC call may take (the pool bounds every upstream call well below this)."""
MAX_BODY: Final = 64 * 1024
HISTORY_LIMIT_MAX: Final = 1000
_KEY_CHARS: Final = re.compile(r"^[\x21-\x7e]+$")
NO_STORE: Final = {"cache-control": "no-store"}


@dataclass
class Dashboard:
    """Everything the endpoints share: the RPC client, the gate, the event hub."""

    rpc: RpcClient
    gate: Gate
    hub: EventHub
    request_timeout: float = REQUEST_TIMEOUT

    async def call(self, method: str, params: dict[str, Any] | None) -> Any:
        try:
            with anyio.fail_after(self.request_timeout):
                return await self.rpc.request(method, params)
        except RpcError as exc:
            raise from_rpc(exc) from None
        except ServerClosed as exc:
            raise from_closed(exc) from None
        except TimeoutError:
            raise ApiError(
                "timeout",
                f"the pool service did not answer {method} within {self.request_timeout:g} s"
                + ("; re-send the apply with the same Idempotency-Key" if method == POOL_APPLY.name else ""),
            ) from None


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _own_origin(request: Request) -> str:
    return request_origin(request.url.scheme, request.headers.get("host", ""))


def authorize(request: Request, *, changes_state: bool) -> Principal:
    """Who is asking; raises when nobody valid is, or when a state change is not same-origin + CSRF."""
    gate = dashboard_of(request).gate
    headers = request.headers
    own = _own_origin(request)
    bearer = gate.bearer(headers)
    if bearer is False:
        raise ApiError("unauthorized", "the bearer token is not valid")
    if bearer:
        if changes_state and cross_site(headers, own):
            raise ApiError("crossOrigin", "cross-origin requests cannot change anything here")
        return Principal("bearer")
    session = gate.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise ApiError("unauthorized", "sign in with the one-time link that `codex-limits dashboard` printed")
    if changes_state:
        if not proven_same_origin(headers, own):
            raise ApiError("crossOrigin", "state-changing requests must come from this dashboard's own page")
        if not gate.check_csrf(session, headers.get(CSRF_HEADER)):
            raise ApiError("csrfTokenInvalid", "missing or wrong X-CSRF-Token header")
    return Principal("session", session)


def _dump(model: type[BaseModel], raw: Any) -> Any:
    """The RPC result through its protocol model: only the model's own fields reach the client."""
    return model.model_validate(raw).model_dump(mode="json", by_alias=True)


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers={**NO_STORE, **(headers or {})})


def _int_param(request: Request, name: str, *, minimum: int, maximum: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ApiError("invalidRequest", f"{name} must be an integer") from None
    if not minimum <= number <= maximum:
        raise ApiError("invalidRequest", f"{name} must be between {minimum} and {maximum}")
    return number


async def _json_body(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError("payloadTooLarge", f"the body must be at most {MAX_BODY} bytes")
    if not body.strip():
        return {}
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ApiError("unsupportedMediaType", "send the body as application/json")
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError("invalidRequest", "the body is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError included
        raise ApiError("invalidRequest", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError("invalidRequest", "the body must be a JSON object")
    try:
        # JSON may escape a lone surrogate (\ud800) that no UTF-8 text holds: refused here, not at the first encode.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            "invalidRequest", "the body holds a lone surrogate (\\ud800 to \\udfff): not Unicode text"
        ) from None
    except RecursionError:
        raise ApiError("invalidRequest", "the body is nested too deeply") from None
    return data


# -- the page ----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


_LOGIN_FAILED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign-in link not valid · codex-limits</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main class="signed-out"><h1>This sign-in link is not valid</h1>
<p>A login link works once and for 10 minutes. Run <code>codex-limits dashboard</code> again for a new one,
or ask for one with <code>POST /api/login-links</code> and the admin token.</p></main></body></html>
"""


async def login(request: Request) -> Response:
    """The one-time link: spend the code, set the session cookie, and go to the page."""
    gate = dashboard_of(request).gate
    redeemed = gate.redeem(request.query_params.get("code", ""))
    if redeemed is None:
        return HTMLResponse(_LOGIN_FAILED, status_code=403, headers=NO_STORE)
    session_id, _ = redeemed
    response = RedirectResponse("/", status_code=303, headers=NO_STORE)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def session_info(request: Request) -> Response:
    principal = authorize(request, changes_state=False)
    csrf = principal.session.csrf_token if principal.session is not None else None
    return _json({"authenticatedBy": principal.kind, "csrfToken": csrf})


async def logout(request: Request) -> Response:
    authorize(request, changes_state=True)
    dashboard_of(request).gate.end(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204, headers=NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def login_link(request: Request) -> Response:
    """A new one-time login link, for scripts holding the admin token (never for a page session)."""
    principal = authorize(request, changes_state=True)
    if principal.kind != "bearer":
        raise ApiError("forbidden", "login links are issued to the admin token only")
    code = dashboard_of(request).gate.issue_login_code()
    return _json({"url": f"{request.url.scheme}://{request.headers.get('host', '')}/login?code={code}"}, 201)


# -- the admin API -----------------------------------------------------------------------------


def _max_age(request: Request) -> dict[str, Any]:
    """The `maxAgeSeconds` query parameter as the pool's list params (none: the pool's own default)."""
    max_age = _int_param(request, "maxAgeSeconds", minimum=0, maximum=86_400)
    return {"maxAgeSeconds": max_age} if max_age is not None else {}


async def list_accounts(request: Request) -> Response:
    authorize(request, changes_state=False)
    raw = await dashboard_of(request).call(POOL_LIST.name, _max_age(request))
    return _json(_dump(ext.AccountPoolListResponse, raw))


async def get_account(request: Request) -> Response:
    authorize(request, changes_state=False)
    account_id = request.path_params["account_id"]
    max_age = _int_param(request, "maxAgeSeconds", minimum=0, maximum=86_400)
    params = {"maxAgeSeconds": max_age} if max_age is not None else {}
    listed = ext.AccountPoolListResponse.model_validate(await dashboard_of(request).call(POOL_LIST.name, params))
    for summary in listed.accounts:
        if summary.account_id == account_id:
            return _json(summary.model_dump(mode="json", by_alias=True))
    known = ", ".join(s.account_id for s in listed.accounts)
    raise ApiError("accountNotFound", f"unknown account {account_id!r} (pool: {known})")


async def refresh_account(request: Request) -> Response:
    """The force probe: read the account now. Never spends anything."""
    authorize(request, changes_state=True)
    raw = await dashboard_of(request).call(POOL_REFRESH.name, {"accountId": request.path_params["account_id"]})
    return _json(_dump(ext.AccountSummary, raw))


async def apply_reset(request: Request) -> Response:
    """Spend one saved reset: `accountPool/resetCredit/apply`, the same pool code path as JSON-RPC."""
    authorize(request, changes_state=True)
    key = request.headers.get("idempotency-key")
    if key is None or key == "":
        raise ApiError(
            "idempotencyKeyRequired",
            "send an Idempotency-Key header (a UUID); re-send the same key to retry the same apply",
        )
    if len(key) > ext.KEY_MAX_LENGTH or not _KEY_CHARS.match(key):
        raise ApiError("invalidRequest", f"Idempotency-Key must be 1 to {ext.KEY_MAX_LENGTH} visible ASCII characters")
    body = await _json_body(request)
    unknown = sorted(set(body) - {"creditId"})
    if unknown:
        raise ApiError("invalidRequest", f"unknown field(s) in the body: {', '.join(unknown)}")
    params = _apply_params(request.path_params["account_id"], key, body.get("creditId"))
    raw = await dashboard_of(request).call(POOL_APPLY.name, params.model_dump(mode="json", by_alias=True))
    result = _dump(ext.AccountPoolApplyResponse, raw)
    return _json(result, headers={"idempotent-replayed": "true" if result.get("replayed") else "false"})


def _apply_params(account_id: str, key: str, credit_id: Any) -> ext.AccountPoolApplyParams:
    """The apply's params through the protocol's own model and limits, refused here as the method would."""
    if credit_id is not None and (not isinstance(credit_id, str) or credit_id == ""):
        raise ApiError("invalidRequest", "creditId must be a non-empty string or null")
    params = ext.AccountPoolApplyParams(account_id=account_id, idempotency_key=key, credit_id=credit_id)
    try:
        check_key_length("creditId", params.credit_id, ext.KEY_MAX_LENGTH)
    except RpcError as exc:
        raise ApiError("invalidRequest", exc.message) from None
    return params


async def history(request: Request) -> Response:
    authorize(request, changes_state=False)
    limit = _int_param(request, "limit", minimum=1, maximum=HISTORY_LIMIT_MAX)
    account_id = request.query_params.get("accountId") or None
    raw = await dashboard_of(request).call(POOL_HISTORY.name, {"accountId": account_id, "limit": limit})
    return _json(_dump(ext.AccountPoolHistoryResponse, raw))


async def reset_credits(request: Request) -> Response:
    """The pool-wide inventory of saved resets, earliest expiry first. Reads only; never applies anything."""
    authorize(request, changes_state=False)
    raw = await dashboard_of(request).call(POOL_RESET_CREDITS_LIST.name, _max_age(request))
    return _json(_dump(ext.AccountPoolResetCreditsListResponse, raw))


async def forecasts(request: Request) -> Response:
    """Each window's burn rate and when it runs out at that rate, from the recorded usage history."""
    authorize(request, changes_state=False)
    lookback = _int_param(request, "lookbackSeconds", minimum=1, maximum=31 * 86_400)
    params = {"accountId": request.query_params.get("accountId") or None, "lookbackSeconds": lookback}
    raw = await dashboard_of(request).call(POOL_FORECAST.name, params)
    return _json(_dump(ext.AccountPoolForecastResponse, raw))


async def events(request: Request) -> Response:
    principal = authorize(request, changes_state=False)
    dashboard = dashboard_of(request)
    gate, session = dashboard.gate, principal.session

    def still_allowed() -> bool:
        return session is None or gate.alive(session)

    try:
        receive = dashboard.hub.subscribe()
    except TooManySubscribers:
        raise ApiError("serviceUnavailable", "too many event streams are open") from None
    body = dashboard.hub.stream(receive, still_allowed=still_allowed)

    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={**NO_STORE, "x-accel-buffering": "no"},
    )


async def openapi_document(request: Request) -> Response:
    return _json(openapi.document())


# -- errors ------------------------------------------------------------------------------------


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"www-authenticate": 'Bearer realm="codex-limits"'} if exc.code == "unauthorized" else {}
    return JSONResponse(exc.body(), status_code=exc.status, headers={**NO_STORE, **headers})


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: the envelope, not Starlette's plain text (the traceback still goes to the log, once)."""
    return error_response(500, "internalError", "the dashboard failed on this request; its log says why")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(405, "methodNotAllowed", "this method is not allowed here", dict(exc.headers or {}))
    if exc.status_code == 404:
        return error_response(404, "notFound", "no such resource")
    return error_response(exc.status_code, "invalidRequest", str(exc.detail))


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/login", login, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/api/session", session_info, methods=["GET"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/login-links", login_link, methods=["POST"]),
        Route("/api/accounts", list_accounts, methods=["GET"]),
        Route("/api/accounts/{account_id}", get_account, methods=["GET"]),
        Route("/api/accounts/{account_id}/refresh", refresh_account, methods=["POST"]),
        Route("/api/accounts/{account_id}/usage-reset/apply", apply_reset, methods=["POST"]),
        Route("/api/history", history, methods=["GET"]),
        Route("/api/reset-credits", reset_credits, methods=["GET"]),
        Route("/api/forecasts", forecasts, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/openapi.json", openapi_document, methods=["GET"]),
    ]
