"""`accountPool/resetCredit/apply` keys have a documented maximum length; upstream's consume keeps its own rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import anyio
import pytest

from app_server.config import Settings, Timeouts
from app_server.server import initialized as server
from protocol import ext
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from tests.support.mock_backend import MockBackend

pytestmark = pytest.mark.anyio

APPLY: Final = "accountPool/resetCredit/apply"
CONSUME: Final = "account/rateLimitResetCredit/consume"
TIMEOUTS: Final = Timeouts(usage=1.0, details=0.5, consume=1.0, refresh=1.0, connect=1.0)
WAIT: Final = 5.0
LIMIT: Final = ext.KEY_MAX_LENGTH
AUTH: Final = {
    "auth_mode": "chatgpt",
    "OPENAI_API_KEY": None,
    "tokens": {"id_token": None, "access_token": "chatgpt-token", "refresh_token": "refresh", "account_id": "acc-1"},
    "last_refresh": "2099-01-01T00:00:00Z",
}


def settings(tmp_path: Path, base_url: str = "http://127.0.0.1:9") -> Settings:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'chatgpt_base_url = "{base_url}"\n', encoding="utf-8")
    (home / "auth.json").write_text(json.dumps(AUTH), encoding="utf-8")
    return Settings(codex_home=home, data_home=tmp_path / "data", refresh_url=f"{base_url}/oauth", timeouts=TIMEOUTS)


def test_the_limit_is_documented_in_the_schema() -> None:
    schema = ext.AccountPoolApplyParams.model_json_schema(by_alias=True)
    assert LIMIT == 256
    assert schema["properties"]["idempotencyKey"]["maxLength"] == LIMIT
    assert f"At most {LIMIT} characters" in schema["properties"]["creditId"]["description"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"idempotencyKey": "k" * (LIMIT + 1)}, f"idempotencyKey must be at most {LIMIT} characters (got {LIMIT + 1})"),
        ({"idempotencyKey": "k", "creditId": "c" * 10_000}, f"creditId must be at most {LIMIT} characters (got 10000)"),
        ({"idempotencyKey": "é" * (LIMIT + 1)}, f"idempotencyKey must be at most {LIMIT} characters (got {LIMIT + 1})"),
    ],
)
async def test_apply_keys_over_the_limit_are_refused(params: dict[str, str], message: str, tmp_path: Path) -> None:
    async with server(settings(tmp_path)) as harness:
        with anyio.fail_after(WAIT), pytest.raises(RpcError) as caught:
            await harness.client.request(APPLY, {"accountId": "default", **params})
        assert (caught.value.code, caught.value.message) == (INVALID_REQUEST, message)
        # The server goes on: a key of exactly the limit passes the length check (and reaches the pool, whose
        # answer here is about the unreachable backend, not the key).
        with anyio.fail_after(WAIT), pytest.raises(RpcError) as later:
            await harness.client.request(APPLY, {"accountId": "default", "idempotencyKey": "k" * LIMIT})
        assert "must be at most" not in later.value.message


async def test_upstreams_consume_keeps_accepting_long_keys(tmp_path: Path) -> None:
    """CONTRACT §5.1: 10 000-character keys are forwarded unchanged by upstream's own method."""
    with MockBackend() as backend:
        backend.set_routes({"POST /api/codex/rate-limit-reset-credits/consume": {"json": {"code": "reset"}}})
        async with server(settings(tmp_path, backend.base_url)) as harness:
            with anyio.fail_after(WAIT):
                result = await harness.client.request(CONSUME, {"idempotencyKey": "k" * 10_000, "creditId": "c" * 300})
        assert result == {"outcome": "reset"}
        assert backend.recorded()[0].json() == {"redeem_request_id": "k" * 10_000, "credit_id": "c" * 300}
