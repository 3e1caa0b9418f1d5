"""Server notifications fan out to every initialized connection that did not opt out (`Broadcaster`):
in memory, and an apply by one WebSocket client reaching the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel

from app_server.rpc.dispatcher import Dispatcher
from app_server.rpc.outbox import Outbox
from protocol import ext
from protocol.methods import POOL_ACCOUNT_UPDATED
from tests.support.connection import WAIT, connect, make_settings, open_services
from tests.support.listener import listening
from tests.support.pool_world import GatedUpstream, make_world

pytestmark = pytest.mark.anyio

UPDATED = POOL_ACCOUNT_UPDATED.name
RATE_LIMITS_UPDATED = "account/rateLimits/updated"


class Note(BaseModel):
    """Any model goes out as a notification's params; the pool's summaries are not this test's concern."""

    account: dict[str, str]


def summary(account_id: str) -> Note:
    return Note(account={"accountId": account_id})


def notes(lines: list[bytes]) -> list[dict[str, Any]]:
    return [m for m in map(json.loads, lines) if "method" in m]


async def test_notify_all_reaches_initialized_sessions_that_did_not_opt_out(tmp_path: Path) -> None:
    async with (
        open_services(make_settings(tmp_path)) as services,
        connect(services) as plain,
        connect(services) as quiet,
        connect(services) as other,
        connect(services) as fresh,  # never initialized
    ):
        await plain.initialize()
        await quiet.initialize(capabilities={"optOutNotificationMethods": [UPDATED]})
        await other.initialize(capabilities={"optOutNotificationMethods": [RATE_LIMITS_UPDATED]})
        assert len(services.broadcaster) == 4
        sent = await services.broadcaster.notify_all(POOL_ACCOUNT_UPDATED, summary("work"))
        outputs = [await conn.finish() for conn in (plain, quiet, other, fresh)]
    assert sent == 2
    got = [notes(lines) for lines in outputs]
    assert got[1] == [] and got[3] == []
    for seen in (got[0], got[2]):
        assert [(n["method"], n["params"]["account"]["accountId"]) for n in seen] == [(UPDATED, "work")]
    assert len(services.broadcaster) == 0  # every connection left the broadcaster when it ended


class Stuck:
    """An output nobody reads: every write waits forever."""

    async def send(self, data: bytes) -> None:
        await anyio.sleep_forever()


async def test_a_full_outbox_is_the_connections_problem_not_the_broadcasts(tmp_path: Path) -> None:
    overflowed = anyio.Event()
    async with open_services(make_settings(tmp_path)) as services, connect(services) as fast:
        stuck = Dispatcher(
            {}, services, Outbox(Stuck(), capacity=2), overflow=overflowed.set, broadcaster=services.broadcaster
        )
        stuck.session.initialized = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck.serve, _Never())
            await fast.initialize()
            with anyio.fail_after(WAIT):
                while len(services.broadcaster) < 2:
                    await anyio.lowlevel.checkpoint()
                for n in range(10):  # the pump takes one, two queue, the fourth overflows
                    await services.broadcaster.notify_all(POOL_ACCOUNT_UPDATED, summary(f"a{n}"))
                await overflowed.wait()
            tg.cancel_scope.cancel()
        lines = await fast.finish()
    assert [n["params"]["account"]["accountId"] for n in notes(lines)] == [f"a{n}" for n in range(10)]


class _Never:
    async def receive(self) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError


async def test_an_apply_by_one_client_reaches_the_other_connections(upstream: GatedUpstream, tmp_path: Path) -> None:
    world = make_world(upstream, tmp_path)
    sock = tmp_path / "s.sock"
    async with (
        listening(world.settings(), ["ws://127.0.0.1:0", f"unix://{sock}"]) as served,
        served.client("ws") as applier,
        served.client("unix") as watcher,
        served.client("unix", capabilities={"optOutNotificationMethods": [UPDATED]}) as quiet,
    ):
        with anyio.fail_after(WAIT):
            raw = await applier.request("accountPool/resetCredit/apply", {"accountId": "alice", "idempotencyKey": "k1"})
            response = ext.AccountPoolApplyResponse.model_validate(raw)
            seen: list[ext.AccountSummary] = []
            while len(seen) < 2:  # the read before the spend and the one after
                note = await watcher.notifications.receive()
                if note["method"] == UPDATED:  # alerts and rate-limit updates come along too
                    seen.append(ext.AccountUpdatedNotification.model_validate(note["params"]).account)
            await quiet.request("accountPool/history", {"accountId": "alice"})  # its answer follows any notification
        while True:
            try:
                note = quiet.notifications.receive_nowait()
            except anyio.WouldBlock:
                break
            assert note["method"] != UPDATED
    assert response.after is not None
    assert [s.account_id for s in seen] == ["alice", "alice"]
    assert seen[-1] == response.after
    assert upstream.consume_keys() == ["k1"]
