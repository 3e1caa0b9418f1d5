"""The pool-wide inventory of saved resets and the forecasts (issue #23), through JSON-RPC and the admin API.

The simulated pool: alice has two saved resets (7 and 21 days to go), dave one (12 days), bob none, and
carol cannot be read (she must sign in), so her stock is unknown and named apart.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from app_server.store.base import UsageSample
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from tests.support.dashboard import BEARER, api, consume_calls

pytestmark = pytest.mark.anyio

HOUR = 3600


async def test_the_inventory_is_ordered_by_expiry_across_accounts() -> None:
    async with api() as a:
        with anyio.fail_after(60):
            sim = a.upstream.accounts
            expiry = {c.id: c.expires_at for name in ("alice", "dave") for c in sim[name].credits}

            rpc: dict[str, Any] = await a.pool.harness.client.request("accountPool/resetCredits/list", {})
            http = await a.http.get("/api/reset-credits", params={"maxAgeSeconds": 600}, headers=BEARER)

            assert http.status_code == 200 and http.headers["cache-control"] == "no-store"
            for answer in (rpc, http.json()):
                rows = [(c["accountId"], c["creditId"], c["expiresAt"]) for c in answer["credits"]]
                assert rows == [
                    ("alice", "credit-alice-1", expiry["credit-alice-1"]),
                    ("dave", "credit-dave-1", expiry["credit-dave-1"]),
                    ("alice", "credit-alice-2", expiry["credit-alice-2"]),
                ]
                assert answer["credits"][0]["label"] == "Alice (Pro)"
                assert answer["credits"][0]["title"] == "Full reset"
                assert answer["totalAvailable"] == 3
                assert answer["unlisted"] == [
                    {
                        "accountId": "carol",
                        "label": "Carol (Team)",
                        "availableCount": None,
                        "listedCount": 0,
                        "status": "reauthRequired",
                    }
                ]
            # Reading the inventory spends nothing.
            assert consume_calls(a.upstream) == 0
            assert [c.status for c in sim["alice"].credits] == ["available", "available"]

            bad = await a.http.get("/api/reset-credits", params={"maxAgeSeconds": "-1"}, headers=BEARER)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalidRequest"
            anonymous = await a.http.get("/api/reset-credits")
            assert anonymous.status_code == 401


async def test_forecasts_from_the_recorded_history() -> None:
    async with api() as a:
        with anyio.fail_after(60):
            now = int(time.time())
            resets = now + 3 * HOUR
            store = a.pool.harness.services.store
            # bob's 5-hour window: 40, 50, 60 % an hour apart in half-hours, so 20 %/h, out an hour after
            # the last sample (before its reset in 3 hours). Nothing else reads bob in this test.
            await store.record_usage(
                [
                    UsageSample("bob", "codex", "primary", now - 2 * HOUR + m * 1800, 40 + 10 * m, 300, resets)
                    for m in range(3)
                ]
                + [UsageSample("bob", "codex", "secondary", now - HOUR, 12, 10_080, now + 5 * 86_400)]
            )

            rpc: dict[str, Any] = await a.pool.harness.client.request("accountPool/forecast", {"accountId": "bob"})
            http = await a.http.get("/api/forecasts", params={"accountId": "bob"}, headers=BEARER)

            assert http.status_code == 200
            for answer in (rpc, http.json()):
                assert (answer["lookbackSeconds"], answer["minSamples"], answer["minSpanSeconds"]) == (3 * HOUR, 3, 600)
                [bob] = answer["accounts"]
                primary, secondary = bob["windows"]
                assert bob["accountId"] == "bob"
                assert primary["status"] == "projected"
                assert primary["burnRatePerHour"] == 20.0
                assert primary["runsOutAt"] == now + HOUR  # 60 % at now-1h, 40 % left at 20 %/h: 2 hours on
                assert primary["runsOutBeforeReset"] is True
                assert (primary["sampleCount"], primary["spanSeconds"]) == (3, HOUR)
                assert secondary["status"] == "tooLittleHistory"
                assert secondary["burnRatePerHour"] is None and secondary["runsOutAt"] is None
                assert "too little history" in secondary["message"]

            # A shorter lookback leaves too little of it.
            short = await a.pool.harness.client.request(
                "accountPool/forecast", {"accountId": "bob", "lookbackSeconds": 2000}
            )
            short_primary = short["accounts"][0]["windows"][0]
            assert (short_primary["status"], short_primary["sampleCount"]) == ("tooLittleHistory", 0)
            assert "no read in this window within the last 33m" in short_primary["message"]

            # Every account when none is named; no history yet reads as no windows.
            everyone = await a.pool.harness.client.request("accountPool/forecast")
            assert [f["accountId"] for f in everyone["accounts"]] == ["alice", "bob", "carol", "dave"]

            with pytest.raises(RpcError) as refused:
                await a.pool.harness.client.request("accountPool/forecast", {"lookbackSeconds": 0})
            assert refused.value.code == INVALID_REQUEST and "lookbackSeconds" in refused.value.message
            unknown = await a.http.get("/api/forecasts", params={"accountId": "zed"}, headers=BEARER)
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "accountNotFound"
            bad = await a.http.get("/api/forecasts", params={"lookbackSeconds": "0"}, headers=BEARER)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalidRequest"
