"""A model of the money path, checked by Hypothesis' stateful testing on both stores.

Two services (two store handles: on one PostgreSQL database, or on one SQLite ledger and one Codex home)
run the pool's money path step by step: look for a pending attempt, claim (`start`), consume on a fake
upstream, then `finish` or `fail`. Hypothesis interleaves the two services' steps as it likes, crashes a
service at any step (its attempt is abandoned with no further write), and makes upstream answer, time out
after spending, or refuse. No apply lock is taken at all: that is the worst a lost lock can do (any
interleaving), and the claim alone must still keep the money:

- no consume is sent while another key's attempt is pending (the model's view of unsettled keys, checked
  when a claim succeeds, and `pending()` agreeing with it);
- upstream's spends equal the ledger's: every key upstream spent is finished as spent or still pending,
  every attempt finished as spent was spent; no key spends twice.

Bounded for CI: a fixed number of examples and steps, derandomized, no deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app_server.store.base import AccountKey, ClaimHeld, Store
from protocol.ext import ApplyStatus
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome
from tests.support.ledger_data import response
from tests.support.store_backends import StoreBackend

MODEL_SETTINGS: Final = settings(
    max_examples=8,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
WAIT: Final = 20.0


@dataclass
class Upstream:
    """The fake upstream: one account with plenty of saved resets; a key spends at most once."""

    redeemed: dict[str, str] = field(default_factory=dict)
    consumes: list[str] = field(default_factory=list)

    def consume(self, key: str, *, acts: bool) -> Outcome | None:
        """`acts`: upstream carries the consume out (else it refuses it, nothing spent; a key it already
        redeemed is answered as such whatever happens)."""
        self.consumes.append(key)
        if key in self.redeemed:
            return Outcome.ALREADY_REDEEMED
        if not acts:
            return None
        self.redeemed[key] = "reset"
        return Outcome.RESET


@dataclass
class Slot:
    """One service's apply in progress."""

    key: str | None = None
    phase: str = "idle"  # idle -> checked -> claimed -> answered -> idle
    outcome: Outcome | None = None


class MoneyPath(RuleBasedStateMachine):
    """Set `backend`, `data_home`, `home` and `portal` on a subclass before running it."""

    backend: StoreBackend
    data_home: Path
    home: Path
    portal: anyio.from_thread.BlockingPortal

    def __init__(self) -> None:
        super().__init__()
        self.account = AccountKey("chatgpt:acct-model:user-model", self.home)
        self.stores: list[Store] = []
        self.slots = [Slot(), Slot()]
        self.upstream = Upstream()
        self.unsettled: set[str] = set()  # claimed, outcome not yet recorded
        self.keys = 0
        self.now = 1_790_000_000

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            with anyio.fail_after(WAIT):
                return await function(*args, **kwargs)

        return self.portal.call(run)

    @initialize()
    def open_two_services(self) -> None:
        self.stores = [self.portal.call(self.backend.open, self.data_home) for _ in range(2)]

    def teardown(self) -> None:
        for store in self.stores:
            self.call(store.aclose)
        _wipe(self.backend, self.data_home, self.home)

    def _tick(self) -> int:
        self.now += 1
        return self.now

    # -- the steps of an apply -------------------------------------------------------------------------

    @precondition(lambda self: any(s.phase == "idle" for s in self.slots))
    @rule(second=st.booleans(), resend=st.booleans())
    def begin(self, second: bool, resend: bool) -> None:
        """A new key, or the re-send of a pending one; refused early (as the pool does) if another pends."""
        service, slot = self._pick("idle", second)
        busy = {s.key for s in self.slots if s.phase != "idle"}
        resendable = sorted(self.unsettled - busy)
        if resend and resendable:
            key = resendable[0]
        else:
            self.keys += 1
            key = f"key-{self.keys}"
        found = self.call(self.stores[service].pending, self.account)
        if found is not None and found.idempotency_key != key:
            assert found.idempotency_key in self.unsettled, (found, self.unsettled)
            return
        slot.key, slot.phase = key, "checked"

    def _pick(self, phase: str, second: bool) -> tuple[int, Slot]:
        """A service whose attempt is at `phase` (the second such, if there are two and `second`)."""
        at = [i for i, s in enumerate(self.slots) if s.phase == phase]
        service = at[-1] if second else at[0]
        return service, self.slots[service]

    @precondition(lambda self: any(s.phase == "checked" for s in self.slots))
    @rule(second=st.booleans())
    def claim(self, second: bool) -> None:
        service, slot = self._pick("checked", second)
        assert slot.key is not None
        holder: str | None = None
        try:
            self.call(self.stores[service].start, slot.key, self.account, "alice", None, self._tick(), 5)
        except ClaimHeld as held:
            holder = held.holder
        if holder is not None:
            assert holder in self.unsettled and holder != slot.key, (holder, self.unsettled)
            slot.key, slot.phase = None, "idle"
            return
        # The claim succeeded: no other key's attempt may be unsettled.
        assert self.unsettled <= {slot.key}, (slot.key, self.unsettled)
        self.unsettled.add(slot.key)
        slot.phase = "claimed"

    @precondition(lambda self: any(s.phase == "claimed" for s in self.slots))
    @rule(second=st.booleans(), how=st.sampled_from(["answer", "timeout", "refuse"]))
    def consume(self, second: bool, how: str) -> None:
        service, slot = self._pick("claimed", second)
        assert slot.key is not None
        others = self.unsettled - {slot.key}
        assert not others, f"consume of {slot.key} sent while {others} pending"
        outcome = self.upstream.consume(slot.key, acts=how != "refuse")
        store = self.stores[service]
        if how == "refuse" and outcome is not None:
            how = "answer"  # already redeemed: upstream says so
        if how == "answer":
            slot.phase, slot.outcome = "answered", outcome
        elif how == "timeout":  # upstream acted, the answer never came: unknown, stays pending
            self.call(store.fail, slot.key, "timed out", self._tick(), keep_pending=True)
            slot.key, slot.phase = None, "idle"
        else:  # a 4xx: proved not spent
            self.call(store.fail, slot.key, "409", self._tick(), keep_pending=False)
            self.unsettled.discard(slot.key)
            slot.key, slot.phase = None, "idle"

    @precondition(lambda self: any(s.phase == "answered" for s in self.slots))
    @rule(second=st.booleans())
    def finish(self, second: bool) -> None:
        service, slot = self._pick("answered", second)
        assert slot.key is not None and slot.outcome is not None
        answer = response("alice", slot.outcome, applied_at=self._tick())
        self.call(self.stores[service].finish, slot.key, answer, 4)
        self.unsettled.discard(slot.key)
        slot.key, slot.phase, slot.outcome = None, "idle", None

    @precondition(lambda self: any(s.phase != "idle" for s in self.slots))
    @rule(second=st.booleans())
    def crash(self, second: bool) -> None:
        """A service dies at its current step: nothing more is written for its attempt."""
        busy = [i for i, s in enumerate(self.slots) if s.phase != "idle"]
        self.slots[busy[-1] if second else busy[0]] = Slot()

    # -- what must always hold ------------------------------------------------------------------------

    @invariant()
    def pending_agrees_with_the_model(self) -> None:
        if not self.stores:
            return
        for store in self.stores:
            found = self.call(store.pending, self.account)
            if self.unsettled:
                assert found is not None and found.idempotency_key in self.unsettled, (found, self.unsettled)
            else:
                assert found is None, found

    @invariant()
    def upstream_spends_equal_the_ledger(self) -> None:
        if not self.stores:
            return
        store = self.stores[0]
        for key in self.upstream.redeemed:
            attempt = self.call(store.get, key)
            assert attempt is not None, f"{key} spent upstream, unknown to the ledger"
            assert attempt.status is ApplyStatus.PENDING or attempt.record.outcome in (
                Outcome.RESET,
                Outcome.ALREADY_REDEEMED,
            ), attempt.record
        for record in self.call(store.history, None, 10_000):
            if record.status is ApplyStatus.FINISHED and record.outcome in (Outcome.RESET, Outcome.ALREADY_REDEEMED):
                assert record.idempotency_key in self.upstream.redeemed, record
        assert len(self.upstream.redeemed) == len(set(self.upstream.redeemed))


def _wipe(backend: StoreBackend, data_home: Path, home: Path) -> None:
    """Between examples: an empty ledger and no marker, as a fresh world."""
    if backend.url is None:
        for path in data_home.glob("ledger.sqlite3*"):
            path.unlink()
    else:
        backend.execute("TRUNCATE applies, claims, usage_samples")
    for marker in home.glob("codex-limits/pending-*.json"):
        marker.unlink()


@pytest.fixture
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal("asyncio") as running:
        yield running


def test_the_claim_keeps_the_money_under_any_interleaving(
    store_backend: StoreBackend, tmp_path: Path, portal: anyio.from_thread.BlockingPortal
) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()

    class Model(MoneyPath):
        pass

    Model.backend = store_backend
    Model.data_home = tmp_path / "data"
    Model.home = home
    Model.portal = portal
    run_state_machine_as_test(Model, settings=MODEL_SETTINGS)
