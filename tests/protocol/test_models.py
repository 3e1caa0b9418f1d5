"""Wire models: every recorded payload round-trips byte for byte; invalid input is rejected."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from protocol import jsonrpc, v1, v2
from protocol.jsonrpc import RpcError
from protocol.validation import parse_params
from tests.support.wire_samples import samples

MODELS: dict[str, type[BaseModel]] = {
    "initialize": v1.InitializeResponse,
    "account/rateLimits/read": v2.GetAccountRateLimitsResponse,
    "account/rateLimitResetCredit/consume": v2.ConsumeAccountRateLimitResetCreditResponse,
    "account/rateLimits/updated": v2.AccountRateLimitsUpdatedNotification,
}

ROUND_TRIP = [s for s in samples() if s.kind in MODELS]


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("sample", ROUND_TRIP, ids=lambda s: f"{s.transcript}:{s.kind}")
def test_recorded_payload_round_trips(sample: Any) -> None:
    model = MODELS[sample.kind].model_validate(sample.payload)
    assert model.__pydantic_serializer__.to_json(model, by_alias=True) == _compact(sample.payload)


def test_nulls_are_written() -> None:
    snapshot = v2.RateLimitSnapshot(limit_id="codex")
    wire = json.loads(snapshot.__pydantic_serializer__.to_json(snapshot, by_alias=True))
    assert list(wire) == [
        "limitId",
        "limitName",
        "normalModelSlug",
        "primary",
        "secondary",
        "credits",
        "individualLimit",
        "spendControlReached",
        "planType",
        "rateLimitReachedType",
    ]
    assert wire["primary"] is None and "jsonrpc" not in wire


@pytest.mark.parametrize("bad", [1.5, 2.0, True, False, None, [1], {"a": 1}, 2**63, -(2**63) - 1])
def test_request_id_rejects_non_ids(bad: Any) -> None:
    assert not jsonrpc.is_request_id(bad)
    with pytest.raises(ValidationError):
        jsonrpc.RequestId.model_validate(bad)


@pytest.mark.parametrize("good", ["", "s1", "é中😀", 0, -5, 2**63 - 1, -(2**63)])
def test_request_id_accepts_ids(good: Any) -> None:
    assert jsonrpc.is_request_id(good)
    assert jsonrpc.RequestId.model_validate(good).root == good


@pytest.mark.parametrize(
    ("model", "raw", "required", "message"),
    [
        (
            v2.GetAccountRateLimitsParams,
            {"excludeResetCreditDetails": None},
            False,
            "invalid type: null, expected a boolean",
        ),
        (
            v2.GetAccountRateLimitsParams,
            {"excludeResetCreditDetails": 1},
            False,
            "invalid type: integer `1`, expected a boolean",
        ),
        (
            v2.GetAccountRateLimitsParams,
            "x",
            False,
            'invalid type: string "x", expected struct GetAccountRateLimitsParams',
        ),
        (v2.ConsumeAccountRateLimitResetCreditParams, {}, True, "missing field `idempotencyKey`"),
        (v2.ConsumeAccountRateLimitResetCreditParams, {"idempotency_key": "k"}, True, "missing field `idempotencyKey`"),
        (
            v2.ConsumeAccountRateLimitResetCreditParams,
            {"idempotencyKey": 123},
            True,
            "invalid type: integer `123`, expected a string",
        ),
        (
            v2.ConsumeAccountRateLimitResetCreditParams,
            {"idempotencyKey": True},
            True,
            "invalid type: boolean `true`, expected a string",
        ),
        (
            v2.ConsumeAccountRateLimitResetCreditParams,
            ["k"],
            True,
            "invalid length 1, expected struct ConsumeAccountRateLimitResetCreditParams with 2 elements",
        ),
        (v2.ConsumeAccountRateLimitResetCreditParams, None, True, "missing field `params`"),
        (v1.InitializeParams, {"clientInfo": {"name": "p"}}, True, "missing field `version`"),
        (
            v1.InitializeParams,
            {"clientInfo": {"name": "p", "version": "1"}, "capabilities": {"experimentalApi": "yes"}},
            True,
            'invalid type: string "yes", expected a boolean',
        ),
    ],
)
def test_params_are_parsed_strictly(model: type[BaseModel], raw: Any, required: bool, message: str) -> None:
    with pytest.raises(RpcError) as caught:
        parse_params(model, raw, required=required)
    assert caught.value.code == jsonrpc.INVALID_REQUEST
    assert caught.value.message == f"Invalid request: {message}"


def test_empty_idempotency_key_is_left_to_the_handler() -> None:
    params = parse_params(v2.ConsumeAccountRateLimitResetCreditParams, {"idempotencyKey": ""}, required=True)
    assert params.idempotency_key == ""


def test_positional_params_quirk() -> None:
    read = parse_params(v2.GetAccountRateLimitsParams, [True], required=False)
    assert read.supports_luna_reserve is True and read.exclude_reset_credit_details is False
    consume = parse_params(v2.ConsumeAccountRateLimitResetCreditParams, ["k", None], required=True)
    assert consume.idempotency_key == "k" and consume.credit_id is None


@pytest.mark.parametrize("outcome", ["RESET", "brand_new_code", "nothing_to_reset", ""])
def test_unknown_outcome_strings_fail(outcome: str) -> None:
    with pytest.raises(ValidationError):
        v2.ConsumeAccountRateLimitResetCreditResponse.model_validate({"outcome": outcome})


def test_outcomes_are_camel_case() -> None:
    assert [o.value for o in v2.ConsumeAccountRateLimitResetCreditOutcome] == [
        "reset",
        "nothingToReset",
        "noCredit",
        "alreadyRedeemed",
    ]
