"""The JSON-RPC codec: a request line parsed strictly as upstream's serde parses it, and answers and
notifications encoded as upstream writes them (compact UTF-8, member order, no `jsonrpc`)."""

from __future__ import annotations

import json
import time
from typing import Any, Final

from pydantic import BaseModel

from protocol import jsonrpc
from protocol.jsonrpc import RpcError, is_request_id
from protocol.methods import METHODS
from protocol.strict_json import DECODER

WHITESPACE: Final = b" \t\r\n"  # JSON's whitespace, as serde_json skips it; not \v or \f
_ENVELOPE_KEYS: Final = ("id", "method", "params")


class Dropped(Exception):
    """A line that is not a message we answer; the text is logged."""


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def decode_line(line: bytes) -> Any:
    """Parse one line strictly as upstream's serde does: UTF-8, no BOM, no NaN, no lone surrogates,
    no duplicated `id`/`method`/`params` member at the top level (nested objects may repeat keys)."""
    text = line.decode("utf-8")
    value, end = DECODER.raw_decode(text)  # the line is stripped: anything after the value is an error
    if end != len(text):
        raise ValueError(f"trailing characters at column {end + 1}")
    escaped = b"\\u" in line
    if type(value) is dict and (
        escaped or line.count(b'"id"') > 1 or line.count(b'"method"') > 1 or line.count(b'"params"') > 1
    ):
        duplicate = _top_level_duplicate(text)
        if duplicate is not None:
            raise Dropped(f"duplicate field `{duplicate}`")
    if escaped and _has_lone_surrogate(value):
        raise ValueError("lone surrogate in string escape")
    return value


def _top_level_duplicate(text: str) -> str | None:
    """The envelope key the top-level object repeats (also when spelled with escapes), if any."""
    found: list[str | None] = []

    # object_pairs_hook runs when an object closes, innermost first: the last call is the top level.
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        found.append(next((key for key in _ENVELOPE_KEYS if keys.count(key) > 1), None))
        return dict(pairs)

    json.JSONDecoder(object_pairs_hook=hook).decode(text)
    return found[-1] if found else None


_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_id(request_id: Any) -> bytes:
    if type(request_id) is int:
        return str(request_id).encode()
    return _compact(request_id).encode("utf-8")


def success(request_id: Any, result: BaseModel) -> bytes:
    return b'{"id":' + encode_id(request_id) + b',"result":' + _to_wire(result) + b"}"


def _to_wire(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model, by_alias=True)


_heads: dict[tuple[int, str], bytes] = {}


def _error_head(code: int, message: str) -> bytes:
    # The same few errors repeat (a client looping on a bad request): encode each text once.
    head = _heads.get((code, message))
    if head is None:
        head = b'{"error":{"code":' + str(code).encode() + b',"message":' + _compact(message).encode("utf-8")
        if len(_heads) < 256:
            _heads[(code, message)] = head
    return head


def failure(request_id: Any, error: RpcError) -> bytes:
    """`{"error":{"code":…,"message":…[,"data":…]},"id":…}`, upstream's member order (§1.2)."""
    head = _error_head(error.code, error.message)
    if error.data is not None:
        data = _to_wire(error.data) if isinstance(error.data, BaseModel) else _compact(error.data).encode("utf-8")
        head += b',"data":' + data
    return head + b'},"id":' + encode_id(request_id) + b"}"


def notification(method: str, params: BaseModel, emitted_at_ms: int | None = None) -> bytes:
    emitted = int(time.time() * 1000) if emitted_at_ms is None else emitted_at_ms
    return (
        b'{"method":'
        + _compact(method).encode("utf-8")
        + b',"params":'
        + _to_wire(params)
        + b',"emittedAtMs":'
        + str(emitted).encode()
        + b"}"
    )


def unknown_method(name: str) -> RpcError:
    expected = ", ".join(f"`{m}`" for m in METHODS)
    return jsonrpc.invalid_request(f"unknown variant `{name}`, expected one of {expected}")


def overlong_id(prefix: bytes) -> Any:
    """The top-level `id` of a line we will not parse whole, if it appears in the kept prefix."""
    depth = 0
    i = 0
    n = len(prefix)
    while i < n:
        ch = prefix[i]
        if ch == 0x22:  # a string: a key at depth 1 may be "id"
            end = i + 1
            while end < n and prefix[end] != 0x22:
                end += 2 if prefix[end] == 0x5C else 1
            if end >= n:
                return None
            token = prefix[i : end + 1]
            i = end + 1
            if depth == 1 and token == b'"id"':
                rest = prefix[i:].lstrip(WHITESPACE)
                if rest[:1] != b":":
                    continue
                # Invalid UTF-8 becomes lone surrogates here, so such an id is refused like one
                # spelled with a lone surrogate escape: it could not be echoed as sent.
                text = rest[1:].lstrip(WHITESPACE).decode("utf-8", "surrogateescape")
                try:
                    value, _ = DECODER.raw_decode(text)
                except (ValueError, RecursionError):
                    return None
                return value if is_request_id(value) and not _has_lone_surrogate(value) else None
            continue
        if ch in b"{[":
            depth += 1
        elif ch in b"}]":
            depth -= 1
        i += 1
    return None
