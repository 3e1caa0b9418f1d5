"""Concurrent reads of one account share their upstream calls (`CodexAccount.fetch`, `SharedCalls`): at most two
fetches of an account in flight (per credentials and options), everyone arriving meanwhile sharing the next one.

The upstream is an `httpx.MockTransport` that numbers every event (a reader arriving, a call starting) on one
counter and lets each call through only when the test says so. Freshness is asserted with those numbers: every
answer comes from a call that started after its reader arrived. Nothing is timed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import anyio
import httpx
import pytest

from app_server.upstream.account import AccountRegistry, CodexAccount, Fetched
from app_server.upstream.backend import BackendError, Caller, HttpPool
from tests.support.signed_home import settings_for

pytestmark = pytest.mark.anyio

BASE: Final = "http://backend.test"
WAIT: Final = 10.0
CALLER: Final = Caller(user_agent="first/1.0", access_token="token-a", account_id="acc-1")
DETAILS: Final = {"available_count": 0, "credits": []}


class Upstream:
    """Counts calls and their concurrency; each call waits for a permit unless `open`. A usage answer names its
    call in `plan_type` ("call-N", N from 1) so that a reader can tell which call served it."""

    def __init__(self, *, open_: bool = False, status: int = 200) -> None:
        self.seq = 0
        self.permits = anyio.Semaphore(0)
        self.open = open_
        self.status = status
        self.usage_starts: list[int] = []
        """`seq` at the start of each usage call, in order: call N started at usage_starts[N - 1]."""
        self.user_agents: list[str] = []
        self.tokens: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.cancelled = 0

    def tick(self) -> int:
        self.seq += 1
        return self.seq

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        usage = request.url.path.endswith("/usage")
        if usage:
            self.usage_starts.append(self.tick())
            self.user_agents.append(request.headers["user-agent"])
            self.tokens.append(request.headers["authorization"])
            number = len(self.usage_starts)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if not self.open:
                await self.permits.acquire()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        if not usage:
            return httpx.Response(200, json=DETAILS)
        return httpx.Response(self.status, json={"plan_type": f"call-{number}"})


def account_for(tmp_path: Path, upstream: Upstream) -> CodexAccount:
    http = HttpPool(httpx.MockTransport(upstream.handle))
    return AccountRegistry(settings_for(tmp_path, BASE), http).get(tmp_path / "home")


def call_number(fetched: Fetched) -> int:
    return int(fetched.usage.plan_type.removeprefix("call-"))


async def settle() -> None:
    with anyio.fail_after(WAIT):
        await anyio.wait_all_tasks_blocked()


async def test_200_concurrent_readers_cost_three_fetches_each_fresher_than_its_request(tmp_path: Path) -> None:
    upstream = Upstream()
    account = account_for(tmp_path, upstream)
    answers: list[tuple[int, int]] = []

    async def reader() -> None:
        arrived = upstream.tick()
        answers.append((arrived, call_number(await account.fetch(CALLER, details=True))))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(reader)
            await settle()
            assert upstream.in_flight == 4  # two fetches, a usage and a details call each; everyone else waits
            upstream.open = True
            upstream.release(4)
    assert len(answers) == 200
    assert len(upstream.usage_starts) == account.reads.started == 3
    for arrived, call in answers:
        assert upstream.usage_starts[call - 1] > arrived, "an answer from a call that started before its request"


async def test_a_reader_arriving_while_two_fetches_run_joins_the_next_one(tmp_path: Path) -> None:
    upstream = Upstream()
    account = account_for(tmp_path, upstream)
    got: dict[str, int] = {}

    async def reader(name: str) -> None:
        got[name] = call_number(await account.fetch(CALLER, details=False))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader, "first")
            await settle()
            tg.start_soon(reader, "second")  # a slow first fetch does not hold it back: its own runs beside it
            await settle()
            assert len(upstream.usage_starts) == 2
            tg.start_soon(reader, "late-1")
            tg.start_soon(reader, "late-2")
            await settle()
            assert len(upstream.usage_starts) == 2  # the late ones wait for the next fetch, not these
            upstream.release()
            await settle()
            assert got == {"first": 1} and len(upstream.usage_starts) == 3
            upstream.release(2)
    assert got == {"first": 1, "second": 2, "late-1": 3, "late-2": 3}


async def test_a_cancelled_reader_does_not_cancel_the_fetch_for_the_others(tmp_path: Path) -> None:
    upstream = Upstream()
    account = account_for(tmp_path, upstream)
    got: list[int] = []

    async def reader(scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            got.append(call_number(await account.fetch(CALLER, details=False)))

    impatient = anyio.CancelScope()
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(reader)
            await settle()
            tg.start_soon(reader, impatient)  # opens the next fetch: its headers are the ones sent
            await settle()
            tg.start_soon(reader)
            tg.start_soon(reader)
            await settle()
            upstream.release()  # the first fetch ends; the next one (three readers) starts
            await settle()
            assert len(upstream.usage_starts) == 3
            impatient.cancel()
            await settle()
            assert upstream.cancelled == 0 and upstream.in_flight == 2
            upstream.release(2)
    assert sorted(got) == [1, 2, 3, 3]


async def test_a_fetch_nobody_waits_for_any_more_is_cancelled(tmp_path: Path) -> None:
    upstream = Upstream()
    account = account_for(tmp_path, upstream)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def reader() -> None:
                with scope:
                    await account.fetch(CALLER, details=True)

            tg.start_soon(reader)
            await settle()
            assert upstream.in_flight == 2
            scope.cancel()
        await settle()
        assert upstream.in_flight == 0 and upstream.cancelled == 2
        with anyio.move_on_after(0):  # a reader gone before its fetch took a step: nothing is left behind
            await account.fetch(CALLER, details=True)
        upstream.open = True
        assert call_number(await account.fetch(CALLER, details=True)) >= 2


async def test_a_failure_reaches_every_reader_of_that_fetch(tmp_path: Path) -> None:
    upstream = Upstream(status=503)
    account = account_for(tmp_path, upstream)
    errors: list[BackendError] = []

    async def reader() -> None:
        try:
            await account.fetch(CALLER, details=False)
        except BackendError as exc:
            errors.append(exc)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(reader)
            await settle()
            upstream.open = True
            upstream.release(2)
    assert len(errors) == 5 and {e.status for e in errors} == {503}
    assert len(upstream.usage_starts) == 3


Fetch = Callable[[], Awaitable[Fetched]]


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda a: a.fetch(CALLER, details=False), id="details excluded"),
        pytest.param(lambda a: a.fetch(CALLER, details=True, luna=True), id="luna"),
        pytest.param(
            lambda a: a.fetch(Caller(CALLER.user_agent, "token-b", CALLER.account_id), details=True), id="token"
        ),
        pytest.param(lambda a: a.fetch(Caller(CALLER.user_agent, "token-a", "acc-2"), details=True), id="account id"),
    ],
)
async def test_reads_with_other_options_or_credentials_are_never_shared(
    tmp_path: Path, other: Callable[[CodexAccount], Awaitable[Fetched]]
) -> None:
    upstream = Upstream(open_=False)
    account = account_for(tmp_path, upstream)
    got: list[int] = []

    async def run(fetch: Callable[[], Awaitable[Fetched]]) -> None:
        got.append(call_number(await fetch()))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, lambda: account.fetch(CALLER, details=True))
            tg.start_soon(run, lambda: account.fetch(CALLER, details=True))
            await settle()  # two fetches of these credentials and options: the most there are at once
            tg.start_soon(run, lambda: other(account))
            await settle()
            assert len(upstream.usage_starts) == 3  # not shared: it does not wait for theirs to end
            upstream.open = True
            upstream.release(6)
    assert sorted(got) == [1, 2, 3]


async def test_a_shared_fetch_uses_the_headers_of_its_first_reader(tmp_path: Path) -> None:
    upstream = Upstream()
    account = account_for(tmp_path, upstream)
    second = Caller(user_agent="second/2.0", access_token="token-a", account_id="acc-1")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: account.fetch(CALLER, details=False))
            tg.start_soon(lambda: account.fetch(CALLER, details=False))
            await settle()
            tg.start_soon(lambda: account.fetch(second, details=False))
            tg.start_soon(lambda: account.fetch(CALLER, details=False))
            await settle()
            upstream.open = True
            upstream.release(2)
    assert upstream.user_agents == ["first/1.0", "first/1.0", "second/2.0"]
    assert upstream.tokens == ["Bearer token-a"] * 3
