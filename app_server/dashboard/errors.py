"""The admin API's errors: the envelope, the stable codes, and the one RpcError -> HTTP table.

The pool's errors carry their own HTTP status and code (`app_server.errors`); a test holds this table to them.

Every error answer is `{"error": {"code": <stable code>, "message": <text for a person>}}`; a
refused apply adds `accountId`, `disabledReason` and (with `pendingApply`) `pendingIdempotencyKey`; an
apply whose outcome is unknown (`outcomeUnknown`) adds `idempotencyKey`, the key to re-send.
Clients branch on `code`, never on `message`.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import JSONResponse

from app_server.dashboard._rpc import ServerClosed
from app_server.errors import ERROR_CODE, CodexLimitsError, RequestError
from app_server.pool.errors import UNKNOWN, ApplyRefused, OutcomeUnknown
from protocol import ext
from protocol.jsonrpc import SERVER_OVERLOADED, RpcError

# code -> (HTTP status, what it means); the OpenAPI document lists them from here.
ERROR_CODES: Final[dict[str, tuple[int, str]]] = {
    "invalidRequest": (400, "the request is malformed (a parameter, the body, a header)"),
    "invalidHost": (400, "the Host header names a host this dashboard does not serve"),
    "idempotencyKeyRequired": (400, "an apply needs an `Idempotency-Key` header"),
    "unauthorized": (401, "no valid bearer token or session cookie"),
    "crossOrigin": (403, "a state-changing request that is not proven same-origin"),
    "csrfTokenInvalid": (403, "a cookie-authenticated state-changing request without the session's CSRF token"),
    "forbidden": (403, "this kind of credential cannot do this"),
    "accountNotFound": (404, "no account with this id in the pool"),
    "notFound": (404, "no such resource"),
    "methodNotAllowed": (405, "the path exists, the method does not"),
    "noCredit": (409, "apply refused: no saved reset available (or the named credit is not available)"),
    "reauthRequired": (409, "apply refused: the account needs to sign in again"),
    "unsupported": (409, "apply refused: upstream cannot apply resets for this account"),
    "unavailable": (409, "apply refused: the account could not be read just now"),
    "pendingApply": (409, "apply refused: an earlier apply's outcome is unknown; re-send its key"),
    "unknownCredit": (409, "apply refused: the account has no saved reset with that creditId (see availableCreditIds)"),
    "applyRefused": (409, "apply refused for a reason this dashboard does not know yet (see disabledReason)"),
    "idempotencyKeyConflict": (409, "this Idempotency-Key belongs to an apply on another account"),
    "applyInProgress": (409, "another apply on this account is still running"),
    "payloadTooLarge": (413, "the request body is too large"),
    "unsupportedMediaType": (415, "the request body must be application/json"),
    "upstreamError": (502, "the account's backend failed; for an apply the message says whether it stays pending"),
    "outcomeUnknown": (
        502,
        "an apply may or may not have spent its saved reset: it stays pending; re-send the same Idempotency-Key"
        " (see idempotencyKey) to learn its outcome",
    ),
    "serviceUnavailable": (503, "the pool service is not reachable, overloaded, or has too many event streams"),
    "timeout": (504, "the pool service did not answer in time; re-send an apply with the same Idempotency-Key"),
    "internalError": (500, "a bug in the dashboard"),
}
_REFUSAL_CODES: Final = frozenset(reason.value for reason in ext.ResetDisabledReason) & ERROR_CODES.keys()
_REFUSED_FIELDS: Final = tuple(str(field.alias) for field in ext.ApplyRefusedData.model_fields.values())


class ApiError(Exception):
    """An admin API failure: its error name (`code`), HTTP status, text and extra envelope fields."""

    def __init__(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def from_rpc(exc: RpcError) -> ApiError:
    """The one table from a JSON-RPC error answer to an API error, read off the error's own data
    (`app_server.errors`): its `errorCode`, a refusal's `disabledReason`, an unknown outcome; else its branch."""
    data = exc.data if isinstance(exc.data, dict) else {}
    code = data.get(ERROR_CODE)
    if isinstance(code, str) and code in ERROR_CODES:
        return ApiError(code, exc.message, {k: v for k, v in data.items() if k != ERROR_CODE})
    if exc.code == RequestError.rpc_code and isinstance(data.get("disabledReason"), str):
        # A reason this dashboard does not know yet (a newer service) is still a refusal: `applyRefused`.
        refused = {name: data.get(name) for name in _REFUSED_FIELDS}
        reason = data["disabledReason"]
        return ApiError(reason if reason in _REFUSAL_CODES else ApplyRefused.http_error, exc.message, refused)
    if exc.code == OutcomeUnknown.rpc_code and data.get("outcome") == UNKNOWN:
        extra = {"accountId": data.get("accountId"), "idempotencyKey": data.get("idempotencyKey")}
        return ApiError(OutcomeUnknown.http_error, exc.message, extra)
    for branch in (RequestError, CodexLimitsError):
        if exc.code == branch.rpc_code:
            return ApiError(branch.http_error, exc.message)
    if exc.code == SERVER_OVERLOADED:
        return ApiError("serviceUnavailable", exc.message)
    return ApiError("serviceUnavailable", f"the pool service answered error {exc.code}: {exc.message}")


def from_closed(exc: ServerClosed) -> ApiError:
    if exc.outcome_unknown:
        # The service went away with an apply in flight: the key decides, never "nothing happened".
        return ApiError(
            "outcomeUnknown",
            f"the pool service went away during the apply ({exc})",
            {"idempotencyKey": exc.idempotency_key},
        )
    return ApiError("serviceUnavailable", f"the pool service is not reachable ({exc})")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error envelope as a response (for errors raised outside an endpoint too)."""
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"cache-control": "no-store", **(headers or {})},
    )
