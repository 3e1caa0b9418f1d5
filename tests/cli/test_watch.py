"""`codex-limits watch`: alerts shown as they arrive, and `--exec` commands that never hold them up (issue #12).

Alerts reach a real `Client` as the server writes them (bytes from the dispatcher's own encoder);
`--exec` commands are real subprocesses.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.parser import build_parser
from app_server.cli.terminal import UI
from app_server.cli.watch import AlertCommand, follow
from app_server.config import REFRESH_INTERVAL_ENV
from app_server.rpc.client import Client
from app_server.rpc.codec import notification
from app_server.rpc.memory import MemoryPipe
from protocol import ext
from protocol.methods import POOL_ACCOUNT_UPDATED, POOL_ALERT
from tests.support.live import summary
from tests.support.pool_calls import wait_until

pytestmark = pytest.mark.anyio

WAIT = 20.0
SIM_PREFIX = str(Path(tempfile.gettempdir()) / "codex-limits-sim-")
T0 = 1_800_000_000


def alert(account_id: str = "alice", threshold: int = 90) -> ext.AccountPoolAlert:
    return ext.AccountPoolAlert(
        kind=ext.AlertKind.USAGE_THRESHOLD,
        account_id=account_id,
        message=f"{account_id}: the 5h window is at {threshold}% (crossed {threshold}%)",
        severity=ext.AlertSeverity.WARNING,
        limit_id="codex",
        window=ext.UsageWindow.PRIMARY,
        window_minutes=300,
        threshold=threshold,
        used_percent=threshold,
        emitted_at=T0,
    )


def ui(*, as_json: bool) -> tuple[UI, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, soft_wrap=True)
    return UI(as_json=as_json, out=console, err=Console(file=io.StringIO())), out


@asynccontextmanager
async def server_output(*lines: bytes) -> AsyncIterator[Client]:
    """A client reading `lines` as the server's output, which then ends."""
    output = MemoryPipe()
    client = Client(MemoryPipe(), output)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        for line in lines:
            await output.send(line + b"\n")
        output.close()
        yield client


def alert_line(a: ext.AccountPoolAlert) -> bytes:
    return notification(POOL_ALERT.name, ext.AccountPoolAlertNotification(alert=a))


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *args]


COPY_STDIN = """
    import sys, pathlib
    pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())
"""


# -- showing alerts --------------------------------------------------------------------------------------------


async def test_alerts_are_printed_one_json_object_per_line_and_nothing_else_is() -> None:
    screen, out = ui(as_json=True)
    updated = notification(POOL_ACCOUNT_UPDATED.name, ext.AccountUpdatedNotification(account=summary()))
    async with server_output(alert_line(alert("alice")), updated, alert_line(alert("bob", 100))) as client:
        with anyio.fail_after(WAIT):
            await follow(client.notifications, screen)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["accountId"] for line in lines] == ["alice", "bob"]
    assert json.loads(lines[0]) == alert("alice").model_dump(mode="json", by_alias=True)


async def test_alerts_are_printed_for_a_person_with_time_severity_and_message() -> None:
    screen, out = ui(as_json=False)
    async with server_output(alert_line(alert("alice"))) as client:
        with anyio.fail_after(WAIT):
            await follow(client.notifications, screen)
    (line,) = out.getvalue().splitlines()
    assert line.endswith("warning  alice: the 5h window is at 90% (crossed 90%)")


async def test_an_alert_that_does_not_parse_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    screen, out = ui(as_json=True)
    broken = b'{"method":"accountPool/alert","params":{"alert":{"kind":"meteorStrike"}},"emittedAtMs":1}'
    with caplog.at_level(logging.WARNING):
        async with server_output(broken, alert_line(alert("bob"))) as client:
            with anyio.fail_after(WAIT):
                await follow(client.notifications, screen)
    assert [json.loads(line)["accountId"] for line in out.getvalue().splitlines()] == ["bob"]
    assert "skipping an alert that does not parse" in caplog.text


# -- --exec ----------------------------------------------------------------------------------------------------


async def test_exec_gets_the_alert_as_json_on_stdin(tmp_path: Path) -> None:
    screen, _ = ui(as_json=True)
    got = tmp_path / "alert.json"
    async with server_output(alert_line(alert("alice"))) as client:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                await follow(client.notifications, screen, [AlertCommand(python(COPY_STDIN, str(got)), 10, tg)])
    assert json.loads(got.read_bytes()) == alert("alice").model_dump(mode="json", by_alias=True)


async def test_a_slow_command_does_not_hold_up_the_next_alert(tmp_path: Path) -> None:
    """The first alert's command blocks until the second alert's command has run."""
    screen, out = ui(as_json=True)
    script = """
        import json, sys, time, pathlib
        tmp = pathlib.Path(sys.argv[1])
        who = json.loads(sys.stdin.read())["accountId"]
        if who == "alice":
            while not (tmp / "bob").exists():
                time.sleep(0.02)
        (tmp / who).write_text("done")
    """
    async with server_output(alert_line(alert("alice")), alert_line(alert("bob"))) as client:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                await follow(client.notifications, screen, [AlertCommand(python(script, str(tmp_path)), WAIT, tg)])
    assert (tmp_path / "alice").read_text() == (tmp_path / "bob").read_text() == "done"
    assert len(out.getvalue().splitlines()) == 2


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_a_command_past_its_timeout_is_killed_with_its_children(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    screen, _ = ui(as_json=True)
    pid_file = tmp_path / "grandchild.pid"
    script = """
        import subprocess, sys, time, pathlib
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        pathlib.Path(sys.argv[1]).write_text(str(child.pid))
        time.sleep(120)
    """
    after = tmp_path / "after.json"
    slow = python(script, str(pid_file))
    with caplog.at_level(logging.WARNING):
        async with server_output(alert_line(alert("alice"))) as client:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    command = AlertCommand(slow, 1.0, tg)
                    copy = AlertCommand(python(COPY_STDIN, str(after)), WAIT, tg)
                    await follow(client.notifications, screen, [command, copy])
                    await wait_until(pid_file.exists)  # a file the command writes: nothing signals it
    assert after.exists()  # the other command for the same alert ran regardless
    assert "still ran after 1 s; killed" in caplog.text
    grandchild = int(pid_file.read_text())
    await wait_until(lambda: not _alive(grandchild))


async def test_a_failing_command_is_logged_and_later_alerts_still_run_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    screen, _ = ui(as_json=True)
    script = """
        import json, sys, pathlib
        who = json.loads(sys.stdin.read())["accountId"]
        if who == "alice":
            sys.exit(3)
        pathlib.Path(sys.argv[1]).write_text(who)
    """
    seen = tmp_path / "seen"
    with caplog.at_level(logging.WARNING):
        async with server_output(alert_line(alert("alice")), alert_line(alert("bob"))) as client:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    await follow(client.notifications, screen, [AlertCommand(python(script, str(seen)), WAIT, tg)])
    assert seen.read_text() == "bob"
    assert "(usageThreshold) exited with status 3" in caplog.text


async def test_a_command_that_cannot_start_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    screen, out = ui(as_json=True)
    missing = str(tmp_path / "no-such-command")
    with caplog.at_level(logging.WARNING):
        async with server_output(alert_line(alert("alice"))) as client:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    await follow(client.notifications, screen, [AlertCommand([missing], WAIT, tg)])
    assert f"alert command {missing} could not start" in caplog.text
    assert len(out.getvalue().splitlines()) == 1


async def test_a_command_that_ignores_its_input_is_fine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    screen, _ = ui(as_json=True)
    marker = tmp_path / "ran"
    command = python("import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('x')", str(marker))
    with caplog.at_level(logging.WARNING):
        async with server_output(alert_line(alert("alice"))) as client:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    await follow(client.notifications, screen, [AlertCommand(command, WAIT, tg)])
    assert marker.read_text() == "x"
    assert caplog.text == ""


# -- the command line ------------------------------------------------------------------------------------------


def test_exec_is_split_like_a_shell_would_but_run_without_one() -> None:
    args = build_parser().parse_args(
        ["watch", "--exec", "notify-send 'codex limits'", "--exec", "sh -c 'cat >> ~/alerts.log'"]
    )
    assert args.exec == [["notify-send", "codex limits"], ["sh", "-c", "cat >> ~/alerts.log"]]
    assert (args.exec_timeout, args.refresh_interval, args.json) == (30.0, 60.0, False)


@pytest.mark.parametrize("bad", [["--exec", ""], ["--exec", "'unclosed"], ["--exec-timeout", "0"]])
def test_a_bad_watch_option_is_a_usage_error(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["watch", *bad])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_watch_asks_the_spawned_server_to_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the service exists, the server watch spawns must run the background refresh itself: it says so
    in the spawned server's environment, never in ours; an interval our environment sets is kept."""
    from app_server.cli import watch as module

    seen: list[str | None] = []

    @asynccontextmanager
    async def fake_connect(
        simulate: bool, *, log_level: str | None = None, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[Any]:
        assert env is not None
        seen.append(env.get(REFRESH_INTERVAL_ENV))
        raise CommandFailed(Exit.SERVER, "stop here")
        yield  # pragma: no cover

    monkeypatch.delenv(REFRESH_INTERVAL_ENV, raising=False)
    monkeypatch.setattr(module, "connect", fake_connect)
    screen, _ = ui(as_json=True)
    with pytest.raises(CommandFailed):
        anyio.run(lambda: module.watch(screen, simulate=True, commands=[], exec_timeout=1, refresh_interval=45))
    assert REFRESH_INTERVAL_ENV not in os.environ
    monkeypatch.setenv(REFRESH_INTERVAL_ENV, "90")
    with pytest.raises(CommandFailed):
        anyio.run(lambda: module.watch(screen, simulate=True, commands=[], exec_timeout=1, refresh_interval=45))
    assert seen == ["45", "90"]


@pytest.mark.subprocess
async def test_watch_simulate_shows_the_simulated_worlds_alerts_until_ctrl_c(tmp_path: Path) -> None:
    """The simulated world reads its accounts in the background as a real one does: its alerts arrive."""
    from tests.support.cli import CLI, base_env

    env = base_env(tmp_path)
    env.pop(REFRESH_INTERVAL_ENV, None)
    argv = [*CLI, "watch", "--simulate", "--refresh-interval", "15", "--json"]
    kinds: dict[str, str] = {}
    lines: list[str] = []
    async with await anyio.open_process(argv, env=env, stdin=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        buffer = b""
        try:
            with anyio.fail_after(90):
                while not {"alice", "carol"} <= set(kinds):
                    chunk = await process.stdout.receive()
                    buffer += chunk
                    *complete, rest = buffer.split(b"\n")
                    buffer = rest
                    for raw in complete:
                        lines.append(raw.decode())
                        alert = json.loads(raw)
                        kinds[alert["accountId"]] = alert["kind"]
                process.send_signal(signal.SIGINT)
                assert await process.wait() == Exit.OK  # Ctrl-C is how watch stops
        finally:
            if process.returncode is None:
                process.kill()
    assert kinds["carol"] == "reauthRequired" and kinds["alice"] == "usageThreshold"
    assert not any(SIM_PREFIX in line for line in lines), lines  # the temp dir is gone when watch ends
