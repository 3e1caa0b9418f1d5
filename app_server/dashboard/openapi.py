"""The admin API's OpenAPI 3.1 document: paths written here, schemas generated from the protocol models.

The response bodies are the `accountPool/*` results, so their schemas come from the same pydantic
models the JSON-RPC schemas under `schemas/json/ext/` come from; nothing is described twice.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app_server import __version__
from app_server.dashboard.errors import ERROR_CODES
from protocol import ext

_REF: Final = "#/components/schemas/{model}"
_MODELS: Final[tuple[type[BaseModel], ...]] = (
    ext.AccountSummary,
    ext.AccountPoolListResponse,
    ext.AccountPoolApplyResponse,
    ext.AccountPoolHistoryResponse,
    ext.AccountPoolResetCreditsListResponse,
    ext.AccountPoolForecastResponse,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in ("unauthorized", *codes, "serviceUnavailable", "timeout"):
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        str(status): {
            "description": "; ".join(f"`{c}`: {ERROR_CODES[c][1]}" for c in names),
            "content": _json_content(_ref("ErrorEnvelope")),
        }
        for status, names in sorted(by_status.items())
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, "content": _json_content(schema)}}


_ACCOUNT_ID: Final = {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MAX_AGE: Final = {
    "name": "maxAgeSeconds",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": 86400},
    "description": "Serve summaries read within this many seconds; omitted reads every account now.",
}
_STATE_CHANGE: Final = (
    " With the session cookie it must be same-origin (Origin or Sec-Fetch-Site) and carry `X-CSRF-Token`."
)


def _error_schemas() -> dict[str, Any]:
    return {
        "ErrorEnvelope": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": list(ERROR_CODES)},
                        "message": {"type": "string", "description": "For a person; branch on `code`."},
                        "accountId": {
                            "type": ["string", "null"],
                            "description": "The account a refused apply, an unknown outcome, a key conflict or a "
                            "running apply is about.",
                        },
                        "disabledReason": {
                            "type": ["string", "null"],
                            "description": "With a refused apply: the pool's reason (new reasons may appear).",
                        },
                        "pendingIdempotencyKey": {
                            "type": ["string", "null"],
                            "description": "With `pendingApply`: the key to re-send to settle the earlier attempt.",
                        },
                    },
                }
            },
        },
        "ApplyRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "creditId": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": ext.KEY_MAX_LENGTH,
                    "description": "Saved reset to spend; omitted lets the backend pick the next available one.",
                }
            },
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    _, top = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=_REF)
    schemas: dict[str, Any] = {**top.get("$defs", {}), **_error_schemas()}
    paths: dict[str, Any] = {
        "/api/accounts": {
            "get": {
                "operationId": "listAccounts",
                "summary": "Every account of the pool (accountPool/list)",
                "parameters": [_MAX_AGE],
                "responses": {**_ok("The accounts", _ref("AccountPoolListResponse")), **_errors("invalidRequest")},
            }
        },
        "/api/accounts/{account_id}": {
            "get": {
                "operationId": "getAccount",
                "summary": "One account's summary",
                "parameters": [_ACCOUNT_ID, _MAX_AGE],
                "responses": {**_ok("The account", _ref("AccountSummary")), **_errors("accountNotFound")},
            }
        },
        "/api/accounts/{account_id}/refresh": {
            "post": {
                "operationId": "refreshAccount",
                "summary": "Force probe: read the account's usage now (accountPool/refresh); never spends anything."
                + _STATE_CHANGE,
                "parameters": [_ACCOUNT_ID],
                "responses": {
                    **_ok("The account, read now", _ref("AccountSummary")),
                    **_errors("crossOrigin", "csrfTokenInvalid", "accountNotFound"),
                },
            }
        },
        "/api/accounts/{account_id}/usage-reset/apply": {
            "post": {
                "operationId": "applyUsageReset",
                "summary": "Spend one saved reset on the account (accountPool/resetCredit/apply). Cannot be undone."
                + _STATE_CHANGE,
                "description": "Refused (409, nothing spent) when the account has no saved reset, needs to sign "
                "in again, cannot use resets, could not be read, or has an apply whose outcome is unknown. "
                "Re-sending a finished Idempotency-Key returns the recorded result with `replayed: true`.",
                "parameters": [
                    _ACCOUNT_ID,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": ext.KEY_MAX_LENGTH},
                        "description": "Identifies this apply (a UUID); re-send the same key to retry it.",
                    },
                ],
                "requestBody": {
                    "required": False,
                    "description": "A JSON object of at most 64 KiB (413 beyond); one nested too deeply to parse, "
                    "or holding a lone surrogate escape (not Unicode text), is a 400.",
                    "content": _json_content(_ref("ApplyRequest")),
                },
                "responses": {
                    **_ok("What the apply did, with the account before and after", _ref("AccountPoolApplyResponse")),
                    **_errors(
                        "idempotencyKeyRequired",
                        "invalidRequest",
                        "crossOrigin",
                        "csrfTokenInvalid",
                        "accountNotFound",
                        "noCredit",
                        "reauthRequired",
                        "unsupported",
                        "unavailable",
                        "pendingApply",
                        "applyRefused",
                        "idempotencyKeyConflict",
                        "applyInProgress",
                        "payloadTooLarge",
                        "unsupportedMediaType",
                        "upstreamError",
                    ),
                },
            }
        },
        "/api/history": {
            "get": {
                "operationId": "applyHistory",
                "summary": "The apply ledger, newest first (accountPool/history)",
                "parameters": [
                    {"name": "accountId", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    **_ok("Ledger entries", _ref("AccountPoolHistoryResponse")),
                    **_errors("invalidRequest", "accountNotFound"),
                },
            }
        },
        "/api/reset-credits": {
            "get": {
                "operationId": "listResetCredits",
                "summary": "Every available saved reset of every account, earliest expiry first "
                "(accountPool/resetCredits/list); reads only, never applies anything",
                "parameters": [_MAX_AGE],
                "responses": {
                    **_ok("The inventory", _ref("AccountPoolResetCreditsListResponse")),
                    **_errors("invalidRequest"),
                },
            }
        },
        "/api/forecasts": {
            "get": {
                "operationId": "forecasts",
                "summary": "Each window's burn rate and when it runs out at that rate, from the recorded usage "
                "history (accountPool/forecast)",
                "parameters": [
                    {"name": "accountId", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "lookbackSeconds",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 31 * 86_400},
                        "description": "Measure the burn rate over this many seconds (default 3 hours).",
                    },
                ],
                "responses": {
                    **_ok("The forecasts", _ref("AccountPoolForecastResponse")),
                    **_errors("invalidRequest", "accountNotFound"),
                },
            }
        },
        "/api/events": {
            "get": {
                "operationId": "events",
                "summary": "Server-sent events: `ready` on connect, `account` (an AccountSummary) after every "
                "refresh or apply, `alert`; a comment line every 15 s.",
                "responses": {
                    "200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {}}}},
                    **_errors(),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": _json_content({"type": "object"})}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "codex-limits admin API",
            "version": __version__,
            "description": "The account pool over HTTP: the same pool code path as the `accountPool/*` "
            "JSON-RPC methods. JSON with camelCase members; errors are "
            '`{"error": {"code", "message"}}` with the stable codes of ErrorEnvelope.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The admin token (token file)."},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "codex_limits_session",
                    "description": "The page's session, from the one-time login link.",
                },
            },
        },
    }
