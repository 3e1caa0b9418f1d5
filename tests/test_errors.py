"""One exception tree: every error of the project carries its JSON-RPC answer and its HTTP answer, and each
edge answers from that data alone (the dispatcher without any per-route wrapper, the admin API from the
wire answer it receives)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import BaseModel

from app_server.config import ConfigError, Settings
from app_server.dashboard.errors import ERROR_CODES, from_rpc
from app_server.errors import CodexLimitsError, RequestError
from app_server.pool.errors import (
    AccountsFileError,
    ApplyBusy,
    ApplyFailed,
    ApplyRefused,
    GuardUnavailable,
    KeyTaken,
    OutcomeUnknown,
    PoolError,
    ReadFailed,
    SignInRequired,
    UnknownAccount,
)
from app_server.rpc.context import RequestContext
from app_server.rpc.dispatcher import Route
from app_server.store.base import ClaimHeld, KeyInUse, LedgerUnusable, LockTimeout, StoreError
from app_server.store.local_guard import GuardError
from app_server.upstream.backend import BackendError
from app_server.upstream.errors import AuthRequired, Purpose
from protocol import ext, v1, v2
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from protocol.methods import Method
from tests.support.connection import make_settings, server

pytestmark = pytest.mark.anyio


def _consume_failure(kind: str) -> BackendError:
    error = BackendError("timeout" if kind == "timeout" else "status", "HTTP 500: boom", 500)
    error.purpose = Purpose.CONSUME
    return error


SAMPLES: Final[dict[str, CodexLimitsError]] = {
    "config": ConfigError("cannot use /x/config.toml: bad"),
    "store": StoreError("the database cannot be reached"),
    "ledger": LedgerUnusable("ledger.sqlite3 is damaged; move it aside"),
    "guard": GuardError("cannot create /x/.codex-limits: read-only"),
    "read": BackendError("status", "HTTP 500: boom", 500),
    "consume": _consume_failure("status"),
    "consume-timeout": _consume_failure("timeout"),
    "auth": AuthRequired(Purpose.READ, api_key=False),
    "key-in-use": KeyInUse("k", "bob", ext.ApplyStatus.FINISHED),
    "claim-held": ClaimHeld("k", "earlier", "alice"),
    "lock-timeout": LockTimeout(30),
    "accounts-file": AccountsFileError("accounts.toml: line 1: bad"),
    "unknown-account": UnknownAccount("zed", ["alice", "bob"]),
    "refused": ApplyRefused("alice", ext.ResetDisabledReason.PENDING_APPLY, pending_key="earlier"),
    "unknown-credit": ApplyRefused(
        "alice", ext.ResetDisabledReason.UNKNOWN_CREDIT, available_credit_ids=["credit-1", "credit-2"]
    ),
    "key-taken": KeyTaken("k", "bob"),
    "busy": ApplyBusy("alice", 30),
    "sign-in": SignInRequired("never signed in here; run `codex login`"),
    "guard-unavailable": GuardUnavailable("alice", "the ledger is read-only"),
    "outcome-unknown": OutcomeUnknown("alice", "k", timeout=True, detail="timed out"),
    "outcome-unknown-after": OutcomeUnknown("alice", "k", timeout=False, detail="disk full", after_consume=True),
    "apply-failed": ApplyFailed("alice", "HTTP 403: no"),
    "read-failed": ReadFailed("failed to fetch codex rate limits: HTTP 500"),
}


def domain_errors() -> set[type[CodexLimitsError]]:
    found: set[type[CodexLimitsError]] = set()
    todo: list[type[CodexLimitsError]] = [CodexLimitsError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_domain_error_has_a_wire_code_and_an_http_status() -> None:
    classes = domain_errors()
    assert {ConfigError, StoreError, KeyInUse, LockTimeout, GuardError, BackendError, AuthRequired} <= classes
    assert {ApplyRefused, OutcomeUnknown, UnknownAccount, KeyTaken, ApplyBusy, PoolError} <= classes
    for cls in classes:
        assert cls.rpc_code in (INVALID_REQUEST, INTERNAL_ERROR), cls
        assert cls.http_error in ERROR_CODES, cls
        assert ERROR_CODES[cls.http_error][0] == cls.http_status, cls
        assert issubclass(cls, RequestError) == (cls.rpc_code == INVALID_REQUEST), cls


def test_every_concrete_error_is_answered_below() -> None:
    sampled = {type(error) for error in SAMPLES.values()}
    assert domain_errors() - {PoolError, RequestError} <= sampled


RAISE: Final = Method("t/raise", v2.GetAccountRateLimitsParams, v1.InitializeResponse, params_required=False)


async def answers_over_json_rpc(settings: Settings, errors: list[CodexLimitsError]) -> list[dict[str, Any]]:
    """Each error raised by a route that has no wrapper of any kind, as the client reads the answer."""
    raised = iter(errors)

    async def handler(ctx: RequestContext[Any], params: Any) -> BaseModel:
        raise next(raised)

    routes = {RAISE.name: Route(RAISE, handler=handler, needs_initialize=False)}
    answers = []
    async with server(settings, routes=routes) as conn:
        for number in range(len(errors)):
            answers.append(json.loads(await conn.call({"id": number, "method": RAISE.name})))
    return answers


async def test_each_error_answers_from_its_own_data_over_json_rpc_and_http(tmp_path: Path) -> None:
    names = list(SAMPLES)
    answers = await answers_over_json_rpc(make_settings(tmp_path), [SAMPLES[name] for name in names])
    for name, answer in zip(names, answers, strict=True):
        error = SAMPLES[name]
        expected: dict[str, Any] = {"code": error.rpc_code, "message": error.message}
        if error.data is not None:
            expected["data"] = error.data
        assert answer == {"error": expected, "id": names.index(name)}, name

        wire = answer["error"]
        api = from_rpc(RpcError(wire["code"], wire["message"], wire.get("data")))
        assert (api.status, api.message) == (error.http_status, error.message), name
        if isinstance(error, ApplyRefused):
            assert api.code == error.reason.value  # the refusal's own code on the admin API
            assert api.extra["disabledReason"] == error.reason.value
        else:
            assert api.code == error.http_error, name


async def test_contract_texts_are_upstreams(tmp_path: Path) -> None:
    """Upstream's methods: its exact texts, and never an `error.data` (CONTRACT §3, §7.3, §8.1)."""
    errors: list[CodexLimitsError] = [
        BackendError("status", "HTTP 500: boom", 500),
        _consume_failure("status"),
        _consume_failure("timeout"),
        AuthRequired(Purpose.CONSUME, api_key=True),
    ]
    answers = await answers_over_json_rpc(make_settings(tmp_path), errors)
    assert [answer["error"] for answer in answers] == [
        {"code": -32603, "message": "failed to fetch codex rate limits: HTTP 500: boom"},
        {"code": -32603, "message": "failed to consume rate limit reset: HTTP 500: boom"},
        {"code": -32603, "message": "rate limit reset consume timed out"},
        {"code": -32600, "message": "chatgpt authentication required for rate limit reset credits"},
    ]


async def test_a_pool_method_answers_a_domain_error_with_its_code_and_data(tmp_path: Path) -> None:
    """Through the real route table: an unknown account on `accountPool/refresh` is -32600 with its data."""
    async with server(make_settings(tmp_path)) as conn:
        await conn.initialize()
        line = await conn.call({"id": 7, "method": "accountPool/refresh", "params": {"accountId": "zed"}})
    answer = json.loads(line)
    assert answer["error"]["code"] == INVALID_REQUEST
    assert answer["error"]["message"].startswith("unknown account 'zed' (pool: ")
    assert answer["error"]["data"] == {"errorCode": "accountNotFound", "accountId": "zed"}
