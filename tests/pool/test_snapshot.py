"""`statusline.json`: what the service writes as reads arrive (through `LiveUpdates`), and when it rewrites it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from app_server.pool.alerts import AlertRules
from app_server.pool.monitor import LiveUpdates
from app_server.pool.snapshot import REWRITE_AFTER, SnapshotWriter
from app_server.service import snapshot, state
from protocol import ext
from tests.support.live import FakeClock, Sent, credit, summary, window

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0
FAR = int(T0) + 7 * 86_400


def live(tmp_path: Path, clock: FakeClock) -> LiveUpdates:
    return LiveUpdates(Sent(), codex_home=tmp_path / "codex", clock=clock, snapshot=SnapshotWriter(tmp_path))


async def test_each_fresh_read_reaches_the_snapshot_as_its_wire_summary(tmp_path: Path) -> None:
    updates = live(tmp_path, FakeClock(T0))
    alice = summary("alice", primary=window(35, FAR), secondary=window(12, FAR), refreshed_at=int(T0))
    await updates.observe(alice)
    await updates.observe(summary("bob", status=ext.AccountStatus.REAUTH_REQUIRED, refreshed_at=int(T0)))

    document = snapshot.read(tmp_path)
    assert document is not None
    assert document["format"] == snapshot.FORMAT and document["pid"] == os.getpid()
    assert document["accounts"][0] == alice.model_dump(mode="json", by_alias=True)
    assert [a["accountId"] for a in document["accounts"]] == ["alice", "bob"]
    assert document["attention"] == {"bob": "critical"}  # must sign in again
    assert stat.S_IMODE(os.stat(snapshot.path(tmp_path)).st_mode) == 0o600
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


async def test_alert_conditions_in_force_are_marked_until_they_clear(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    updates = live(tmp_path, clock)

    async def attention_after(used: int, **extra: object) -> object:
        await updates.observe(summary("alice", primary=window(used, FAR), refreshed_at=int(clock.now()), **extra))  # type: ignore[arg-type]
        document = snapshot.read(tmp_path)
        assert document is not None
        return document["attention"].get("alice")

    assert await attention_after(10) is None
    assert await attention_after(85) == "warning"  # above the 80 % threshold
    assert await attention_after(100) == "critical"
    assert await attention_after(5) is None  # the window was reset
    expiring = [credit("c1", int(T0) + 3600)]
    assert await attention_after(5, credits=expiring) == "warning"  # a saved reset expires within 3 days


def test_an_unchanged_read_rewrites_only_once_it_is_worth_saying_it_is_newer(tmp_path: Path) -> None:
    writer = SnapshotWriter(tmp_path)
    read = summary("alice", primary=window(35, FAR), refreshed_at=int(T0))
    writer.update(read, None)
    first = Path(snapshot.path(tmp_path)).read_bytes()

    writer.update(read.model_copy(update={"refreshed_at": int(T0) + REWRITE_AFTER - 1}), None)
    assert Path(snapshot.path(tmp_path)).read_bytes() == first

    writer.update(read.model_copy(update={"refreshed_at": int(T0) + REWRITE_AFTER}), None)
    document = snapshot.read(tmp_path)
    assert document is not None and document["accounts"][0]["refreshedAt"] == int(T0) + REWRITE_AFTER

    writer.update(summary("alice", primary=window(36, FAR), refreshed_at=int(T0) + REWRITE_AFTER + 1), None)
    document = snapshot.read(tmp_path)
    assert document is not None and document["accounts"][0]["rateLimits"]["primary"]["usedPercent"] == 36


async def test_a_forgotten_account_leaves_the_snapshot(tmp_path: Path) -> None:
    updates = live(tmp_path, FakeClock(T0))
    await updates.observe(summary("alice", primary=window(1, FAR), refreshed_at=int(T0)))
    await updates.observe(summary("bob", primary=window(2, FAR), refreshed_at=int(T0)))
    updates.forget("alice")
    document = snapshot.read(tmp_path)
    assert document is not None and [a["accountId"] for a in document["accounts"]] == ["bob"]


async def test_a_data_directory_it_cannot_write_loses_the_snapshot_not_the_read(tmp_path: Path) -> None:
    sent = Sent()
    updates = LiveUpdates(
        sent, codex_home=tmp_path, clock=FakeClock(T0), snapshot=SnapshotWriter(tmp_path / "missing" / "dir")
    )
    assert await updates.observe(summary("alice", primary=window(1, FAR), refreshed_at=int(T0)))
    assert sent.named("accountPool/accountUpdated")


def test_attention_is_none_for_an_account_never_seen() -> None:
    assert AlertRules().attention("nobody", T0) is None


def test_a_used_up_window_is_critical_whatever_the_thresholds() -> None:
    rules = AlertRules(thresholds=(50,))
    rules.evaluate(summary("alice", primary=window(60, FAR)), T0)
    assert rules.attention("alice", T0) is ext.AlertSeverity.WARNING
    rules.evaluate(summary("alice", primary=window(100, FAR)), T0)
    assert rules.attention("alice", T0) is ext.AlertSeverity.CRITICAL


def test_the_reader_names_the_same_files_as_the_service_state() -> None:
    env = {"CODEX_LIMITS_HOME": "~/somewhere"}
    assert snapshot.data_home(env) == str(state.data_home(env))
    assert snapshot.data_home({}) == str(state.data_home({}))
    assert snapshot.LOCK_NAME == state.LOCK_NAME


def test_an_unreadable_snapshot_is_an_error_that_says_which_file(tmp_path: Path) -> None:
    Path(snapshot.path(tmp_path)).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"statusline\.json is not JSON"):
        snapshot.read(tmp_path)
    Path(snapshot.path(tmp_path)).write_text('{"format": 99, "accounts": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a format-1 snapshot"):
        snapshot.read(tmp_path)
    assert snapshot.read(tmp_path / "empty") is None


def test_the_lock_held_by_a_service_is_seen_and_released(tmp_path: Path) -> None:
    assert not snapshot.service_running(tmp_path)
    lock = state.ServiceLock(tmp_path)
    lock.acquire()
    try:
        assert snapshot.service_running(tmp_path)
    finally:
        lock.release()
    assert not snapshot.service_running(tmp_path)
