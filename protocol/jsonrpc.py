"""The JSON-RPC envelope as the Codex app-server writes it: no `jsonrpc` member, ids string or i64.

Error codes are the three upstream emits (CONTRACT §3); `RpcError` is the one exception that
crosses from a handler to the wire, and the one a client raises for an error answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Field, RootModel, StrictInt, StrictStr, WithJsonSchema

from ._model import I64_MAX, I64_MIN, Int64, WireModel

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "SERVER_OVERLOADED",
    "JSONRPCError",
    "JSONRPCErrorError",
    "JSONRPCNotification",
    "JSONRPCRequest",
    "JSONRPCResponse",
    "RequestId",
    "RequestIdValue",
    "RpcError",
    "W3cTraceContext",
    "invalid_request",
    "is_request_id",
]

INVALID_REQUEST: Final = -32600
INTERNAL_ERROR: Final = -32603
SERVER_OVERLOADED: Final = -32001


_I64 = Annotated[StrictInt, Field(ge=I64_MIN, le=I64_MAX), WithJsonSchema({"format": "int64", "type": "integer"})]
RequestIdValue = StrictStr | _I64


class RequestId(RootModel[RequestIdValue]):
    """A string, or an integer in the signed 64-bit range. Floats, booleans and null are not ids."""


def is_request_id(value: object) -> bool:
    """True for the ids upstream answers; anything else turns a request into an ignored notification."""
    if isinstance(value, str):
        return True
    return type(value) is int and I64_MIN <= value <= I64_MAX


class W3cTraceContext(WireModel):
    traceparent: str | None = None
    tracestate: str | None = None


class JSONRPCRequest(WireModel):
    """A request that expects a response."""

    id: RequestId
    method: str
    params: Any = None
    trace: W3cTraceContext | None = Field(
        default=None, description="Optional W3C Trace Context for distributed tracing."
    )


class JSONRPCNotification(WireModel):
    """A notification which does not expect a response."""

    method: str
    params: Any = None


class JSONRPCResponse(WireModel):
    """A successful (non-error) response to a request."""

    id: RequestId
    result: Any


class JSONRPCErrorError(WireModel):
    code: Int64
    message: str
    data: Any = None


class JSONRPCError(WireModel):
    """A response to a request that indicates an error occurred."""

    error: JSONRPCErrorError
    id: RequestId


class RpcError(Exception):
    """A JSON-RPC error answer: raised by handlers, and by clients that receive one.

    `data` is only set by codex-limits' own extension methods; upstream never sends it.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r}, data={self.data!r})"

    def to_error(self) -> JSONRPCErrorError:
        return JSONRPCErrorError(code=self.code, message=self.message, data=self.data)


def invalid_request(detail: str) -> RpcError:
    """upstream's serde failures: `Invalid request: <detail>`."""
    return RpcError(INVALID_REQUEST, f"Invalid request: {detail}")
