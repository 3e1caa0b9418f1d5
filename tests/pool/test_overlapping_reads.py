"""Reads of one account that overlap and land out of order (the dashboard's refresh beside an apply).

A read that started before another which has already landed is older news: it must neither replace the
account's summary nor be announced to clients. Here a refresh of alice is answered by upstream before her
credit is spent and then held, while an apply spends the credit and its own after-read lands first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import pytest

from protocol import ext
from tests.support.pool_calls import REFRESH, WAIT, apply, drain_updates, pool_list, running, wait_for
from tests.support.pool_world import GATE_LIMIT, GatedUpstream, World

pytestmark = pytest.mark.anyio

CREDITS_SUFFIX = "/rate-limit-reset-credits"


class ReadHeldUpstream(GatedUpstream):
    """The gated simulator that, once armed, answers the next reset-credits read and withholds the answer."""

    def __init__(self) -> None:
        super().__init__()
        self._armed = False
        self._arm_lock = threading.Lock()
        self.read_answered = threading.Event()
        self._read_gate = threading.Event()

    def hold_next_read(self) -> None:
        self._armed = True

    def release_read(self) -> None:
        self._read_gate.set()

    def handle_request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        answer = super().handle_request(method, path, headers, body)
        if path.split("?", 1)[0].rstrip("/").endswith(CREDITS_SUFFIX):
            with self._arm_lock:
                held, self._armed = self._armed, False
            if held:
                self.read_answered.set()  # the answer is computed now, before the spend
                self._read_gate.wait(GATE_LIMIT)
        return answer


@pytest.fixture
def upstream() -> Iterator[ReadHeldUpstream]:
    sim = ReadHeldUpstream()
    with sim:
        yield sim
        sim.release_read()
        sim.release()


async def test_an_older_read_landing_late_neither_replaces_the_summary_nor_is_announced(
    world: World, upstream: ReadHeldUpstream
) -> None:
    async with running(world.settings()) as h:
        before = await pool_list(h)
        assert before["alice"].reset_credits is not None
        count = before["alice"].reset_credits.available_count
        assert count is not None and count >= 1
        drain_updates(h)

        late: list[ext.AccountSummary] = []

        async def old_refresh() -> None:
            with anyio.fail_after(WAIT):
                raw = await h.client.request(REFRESH, {"accountId": "alice"})
            late.append(ext.AccountSummary.model_validate(raw))

        async with anyio.create_task_group() as tg:
            upstream.hold_next_read()
            tg.start_soon(old_refresh)
            await wait_for(upstream.read_answered)

            applied = await apply(h, "alice", "overlap-key-1")
            assert applied.after is not None and applied.after.reset_credits is not None
            assert applied.after.reset_credits.available_count == count - 1
            announced_after_apply = drain_updates(h)

            upstream.release_read()

        # The old read still answers its own caller with what upstream said when it asked...
        assert late and late[0].reset_credits is not None
        assert late[0].reset_credits.available_count == count
        # ...but the pool keeps the newer summary, and nobody was told the spent credit is back.
        after = await pool_list(h)
        assert after["alice"].reset_credits is not None
        assert after["alice"].reset_credits.available_count == count - 1
        stale = [
            s
            for s in drain_updates(h)
            if s.account_id == "alice" and s.reset_credits is not None and s.reset_credits.available_count == count
        ]
        assert stale == []
        assert any(s.account_id == "alice" for s in announced_after_apply)
    assert len(upstream.consume_keys()) == 1
