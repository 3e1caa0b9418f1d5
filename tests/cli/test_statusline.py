"""`codex-limits statusline`: every placeholder, groups, the no-service and stale lines, `--json`, colour
only on a terminal, and a real service whose reads reach the line.

Snapshots are written by `SnapshotWriter`, the code the service runs, into a data directory whose
service lock the test holds (as a running service does).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from app_server.cli import statusline
from app_server.pool.snapshot import SnapshotWriter
from app_server.service import snapshot
from app_server.service.state import ServiceLock
from protocol import ext
from tests.support.live import credit, summary, window
from tests.support.pool_world import GatedUpstream, make_world

NOW = 1_800_000_000
H, M = 3600, 60
LAUNCH = [sys.executable, "-m", "app_server.cli.launch"]
CLI = [sys.executable, "-m", "app_server.cli.main"]
WAIT = 60.0


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose service lock is held, as while the service runs."""
    lock = ServiceLock(tmp_path)
    lock.acquire()
    try:
        yield tmp_path
    finally:
        lock.release()


def options(**given: Any) -> dict[str, Any]:
    parsed = statusline._options([])
    parsed.update(given)
    return parsed


def alice(refreshed_at: int = NOW - 4 * M) -> ext.AccountSummary:
    """35 % of the 5h window (resets in 2h5m), 100 % of the weekly one (3d4h), 2 saved resets, ready."""
    read = summary(
        "alice",
        primary=window(35, NOW + 2 * H + 5 * M + 30),
        secondary=window(100, NOW + 3 * 86_400 + 4 * H, minutes=10_080),
        credits=[credit("c1", None), credit("c2", None)],
        refreshed_at=refreshed_at,
    )
    action = ext.ResetAction(enabled=True, warning=ext.APPLY_WARNING, readiness=ext.ResetReadiness.EXHAUSTED)
    return read.model_copy(update={"reset_action": action})


def write(home: Path, *reads: tuple[ext.AccountSummary, ext.AlertSeverity | None]) -> None:
    writer = SnapshotWriter(home)
    for read, attention in reads:
        writer.update(read, attention)


def line(home: Path, **given: Any) -> str:
    result = statusline.build(options(**given), str(home), NOW)
    text: str = result["line"]
    return text


def test_every_placeholder(home: Path) -> None:
    write(home, (alice(), ext.AlertSeverity.CRITICAL))
    template = "|".join(f"{{{name}}}" for name in statusline.PLACEHOLDERS)
    assert line(home, format=template) == "|".join(
        [
            "alice",  # account
            "Alice",  # label
            "active",  # status
            "35",  # primary
            "100",  # secondary
            "2h5m",  # primary_resets_in
            "3d4h",  # secondary_resets_in
            "3d4h",  # resets_in: of the most-used window
            "2",  # saved
            "ready",  # ready
            "!!",  # alert
            "",  # problem
            "4m",  # age
            "",  # stale
        ]
    )


def test_the_default_line_and_groups_that_drop_out_without_a_value(home: Path) -> None:
    bob = summary("bob", status=ext.AccountStatus.REAUTH_REQUIRED, refreshed_at=NOW - 60)
    carol = summary("carol", primary=window(85, NOW + 30 * M), refreshed_at=NOW - 60)
    write(home, (alice(), None), (bob, ext.AlertSeverity.CRITICAL), (carol, ext.AlertSeverity.WARNING))
    assert line(home) == "alice 35%/100% ⟳3d4h ★2 ready | !!bob sign-in | !carol 85% ⟳30m"
    assert line(home, accounts=["carol"], separator=" / ") == "!carol 85% ⟳30m"
    assert line(home, accounts=["carol", "alice"], format="{account}") == "carol | alice"
    assert line(home, accounts=["dave"]) == "codex-limits: dave not read by the service"
    assert line(home, accounts=["alice"], format=r"\(\{account\}\) \\ ({saved} saved)") == r"({account}) \ 2 saved"


def test_no_saved_reset_and_a_pending_apply(home: Path) -> None:
    read = summary("erin", primary=window(5, NOW + H), credits=[], refreshed_at=NOW)
    pending = ext.PendingApply(idempotency_key="k", started_at=NOW - 10)
    write(home, (read.model_copy(update={"pending_apply": pending}), None))
    assert line(home) == "erin 5% ⟳1h pending"


def test_without_a_service_the_line_says_so(tmp_path: Path) -> None:
    write(tmp_path, (alice(), None))  # a snapshot left by a service that has stopped
    result = statusline.build(options(), str(tmp_path), NOW)
    assert result["line"] == statusline.NO_SERVICE == "codex-limits: no service"
    assert result["service"] == "stopped" and result["accounts"] == []


def test_a_service_that_has_read_nothing_yet(home: Path) -> None:
    assert line(home) == "codex-limits: no reads yet"


def test_an_unreadable_snapshot_says_which_file(home: Path) -> None:
    Path(snapshot.path(home)).write_text("[]", encoding="utf-8")
    assert line(home) == f"codex-limits: {snapshot.path(home)} is not a format-1 snapshot"


def test_a_stale_read_is_marked_in_the_line(home: Path) -> None:
    write(home, (alice(refreshed_at=NOW - 20 * M), None))
    assert line(home).endswith("★2 ready (stale 20m)")
    assert line(home, max_age=30 * M).endswith("★2 ready")
    assert line(home, format="{account}( old:{stale})") == "alice old:20m"  # a template that places it itself


def test_a_snapshot_of_the_wrong_shape_is_said_in_the_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot.write(home, {"format": 1, "accounts": [{"accountId": "x", "rateLimits": "not an object"}]})
    monkeypatch.setenv("CODEX_LIMITS_HOME", str(home))
    assert statusline.main([]) == 0
    assert capsys.readouterr().out.startswith(f"codex-limits: {snapshot.path(home)} is not a format-1 snapshot")


def test_a_read_that_hangs_gives_up_at_the_deadline(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    release = threading.Event()

    def hangs(home: object) -> None:
        release.wait(WAIT)  # as a hung file system would; the deadline's signal interrupts it

    monkeypatch.setenv("CODEX_LIMITS_HOME", str(home))
    monkeypatch.setattr(snapshot, "read", hangs)
    monkeypatch.setattr(statusline, "DEADLINE", 0.05)
    assert statusline.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["line"] == "codex-limits: timed out"
    release.set()


def test_template_and_option_errors_exit_2_and_say_why(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--format", "{nope}"], "unknown placeholder {nope}"),
        (["-f", "(a (b))"], "groups do not nest"),
        (["-f", "{account"], "unclosed {"),
        (["-f", "a)"], "unmatched )"),
        (["--max-age", "soon"], "not a number of seconds"),
        (["--color", "blue"], "not one of auto, always, never"),
        (["--account"], "--account needs a value"),
        (["--bogus"], "unrecognized argument: --bogus"),
    ]:
        assert statusline.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("usage: codex-limits statusline")


def test_help_lists_every_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    assert statusline.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"{{{name}}}" in out for name in statusline.PLACEHOLDERS)


def run(home: Path, *args: str, command: list[str] = LAUNCH) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["CODEX_LIMITS_HOME"] = str(home)
    return subprocess.run(
        [*command, "statusline", *args], env=env, capture_output=True, text=True, timeout=WAIT, check=False
    )


def fresh_alice() -> ext.AccountSummary:
    # The subprocesses below read the clock themselves: a read from now, whose windows reset far ahead.
    import time

    now = int(time.time())
    return summary("alice", primary=window(85, now + 86_400), secondary=window(10, now + 86_400), refreshed_at=now)


@pytest.mark.subprocess
def test_json_and_no_colour_on_a_pipe(home: Path) -> None:
    write(home, (fresh_alice(), ext.AlertSeverity.WARNING))
    plain = run(home)
    assert plain.returncode == 0 and plain.stdout.startswith("!alice 85%/10% ⟳") and "\x1b" not in plain.stdout
    forced = run(home, "--color", "always")
    assert "\x1b[33m85\x1b[0m" in forced.stdout and "\x1b[33m!\x1b[0m" in forced.stdout

    result = run(home, "--json", "--color", "always")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["service"] == "running" and document["snapshot"] == "ok"
    assert document["line"] == plain.stdout.rstrip("\n")  # no colour in JSON
    (account,) = document["accounts"]
    assert account["account"] == "alice" and account["primary"] == 85 and account["secondary"] == 10
    assert account["alert"] == "!" and account["attention"] == "warning" and account["stale"] is None
    assert account["saved"] is None and account["ready"] is None and account["primary_resets_at"] > 0

    stopped = run(home / "elsewhere", "--json")
    assert json.loads(stopped.stdout)["line"] == "codex-limits: no service"
    assert run(home, "--format", "{account}", command=CLI).stdout == "alice\n"  # `main` routes it as well


@pytest.mark.subprocess
def test_colour_on_a_terminal_unless_no_color(home: Path) -> None:
    write(home, (fresh_alice(), None))

    def on_terminal(extra_env: dict[str, str]) -> bytes:
        leader, follower = pty.openpty()
        env = {**{k: v for k, v in os.environ.items() if k != "NO_COLOR"}, "TERM": "xterm", **extra_env}
        env["CODEX_LIMITS_HOME"] = str(home)
        with subprocess.Popen([*LAUNCH, "statusline"], stdout=follower, stderr=follower, env=env) as child:
            os.close(follower)
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert child.wait(timeout=WAIT) == 0
        os.close(leader)
        return b"".join(chunks)

    assert b"\x1b[33m85\x1b[0m" in on_terminal({})
    assert b"\x1b" not in on_terminal({"NO_COLOR": "1"})


@pytest.mark.subprocess
def test_version_is_answered_before_the_cli_loads() -> None:
    fast = subprocess.run([*LAUNCH, "--version"], capture_output=True, text=True, timeout=WAIT, check=True)
    full = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=WAIT, check=True)
    assert fast.stdout == full.stdout and fast.stdout.startswith("codex-limits ")


@pytest.mark.anyio
@pytest.mark.subprocess
async def test_the_running_service_reads_reach_the_line(upstream: GatedUpstream, tmp_path: Path) -> None:
    world = make_world(upstream, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "OPENAI_", "NO_COLOR"))}
    env.update(
        CODEX_HOME=str(world.codex_home),
        CODEX_LIMITS_HOME=str(world.data_home),
        CODEX_REFRESH_TOKEN_URL_OVERRIDE=world.upstream.refresh_url,
    )

    async def cli(*args: str, command: list[str] = CLI) -> subprocess.CompletedProcess[bytes]:
        with anyio.fail_after(WAIT):
            return await anyio.run_process([*command, *args], env=env, check=False)

    before = await cli("statusline")
    assert before.stdout.decode() == "codex-limits: no service\n"
    started = await cli("service", "start")
    assert started.returncode == 0, started.stderr.decode()
    try:
        assert (await cli("statusline")).stdout.decode() == "codex-limits: no reads yet\n"
        status = await cli("status", "--json")
        assert status.returncode == 0, status.stderr.decode()
        listed = {a["accountId"]: a for a in json.loads(status.stdout)}
        shown = await cli("statusline", "--json", command=LAUNCH)
        assert shown.returncode == 0
        document = json.loads(shown.stdout)
    finally:
        await cli("service", "stop")
    assert document["service"] == "running"
    accounts = {a["account"]: a for a in document["accounts"]}
    assert accounts.keys() == listed.keys()
    for account_id, values in accounts.items():
        limits = listed[account_id]["rateLimits"] or {}
        assert values["primary"] == (limits.get("primary") or {}).get("usedPercent")
        assert values["status"] == listed[account_id]["status"]
