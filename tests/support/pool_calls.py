"""Calls on the pool over an in-memory connection, shared by the pool tests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest

from app_server.config import Settings
from app_server.rpc.memory import Harness
from app_server.server import serve_in_memory
from app_server.world import World
from protocol import ext
from protocol.jsonrpc import INVALID_REQUEST, RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED

WAIT = 15.0
LIST = "accountPool/list"
REFRESH = "accountPool/refresh"
APPLY = "accountPool/resetCredit/apply"
HISTORY = "accountPool/history"


@asynccontextmanager
async def running(settings: Settings, **initialize: Any) -> AsyncIterator[Harness[World]]:
    async with serve_in_memory(World(settings)) as harness:
        with anyio.fail_after(WAIT):
            if initialize:
                await harness.client.request("initialize", initialize)
            else:
                await harness.initialize()
        yield harness


# -- calls -----------------------------------------------------------------------------------------------------


async def pool_list(h: Harness[World], max_age: int | None = None) -> dict[str, ext.AccountSummary]:
    params = {} if max_age is None else {"maxAgeSeconds": max_age}
    with anyio.fail_after(WAIT):
        raw = await h.client.request(LIST, params)
    parsed = ext.AccountPoolListResponse.model_validate(raw)
    return {s.account_id: s for s in parsed.accounts}


async def apply(
    h: Harness[World], account: str, key: str, credit_id: str | None = None
) -> ext.AccountPoolApplyResponse:
    params: dict[str, Any] = {"accountId": account, "idempotencyKey": key}
    if credit_id is not None:
        params["creditId"] = credit_id
    with anyio.fail_after(WAIT):
        raw = await h.client.request(APPLY, params)
    return ext.AccountPoolApplyResponse.model_validate(raw)


async def apply_error(h: Harness[World], account: str, key: str, credit_id: str | None = None) -> RpcError:
    with pytest.raises(RpcError) as raised:
        await apply(h, account, key, credit_id)
    return raised.value


async def history(h: Harness[World], **params: Any) -> list[ext.ApplyRecord]:
    with anyio.fail_after(WAIT):
        raw = await h.client.request(HISTORY, params)
    return ext.AccountPoolHistoryResponse.model_validate(raw).entries


def drain_updates(h: Harness[World]) -> list[ext.AccountSummary]:
    """The accountUpdated notifications received so far (the answer to a request follows its notifications)."""
    updates: list[ext.AccountSummary] = []
    while True:
        try:
            message = h.client.notifications.receive_nowait()
        except anyio.WouldBlock:
            return updates
        if message["method"] == POOL_ACCOUNT_UPDATED.name:
            updates.append(ext.AccountUpdatedNotification.model_validate(message["params"]).account)


async def wait_for(event: threading.Event) -> None:
    with anyio.fail_after(WAIT):
        assert await anyio.to_thread.run_sync(event.wait, WAIT, abandon_on_cancel=True)


async def wait_until(condition: Callable[[], bool]) -> None:
    """For states nothing signals (a task queued on an anyio.Lock): poll, bounded like every other wait."""
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def refused_data(error: RpcError) -> ext.ApplyRefusedData:
    assert error.code == INVALID_REQUEST
    return ext.ApplyRefusedData.model_validate(error.data)
