"""`codex-limits watch`: alerts as they arrive, and optionally a command run for each one.

Each `accountPool/alert` is printed (one JSON object per line with `--json`) and handed to every
`--exec` command as JSON on its stdin. A command runs without a shell (its text is split like a
shell would, so `--exec "sh -c '…'"` is how to ask for one), in its own process group, and in the
background: a slow or failing command is logged on stderr and never holds up the alerts after it;
one still running after `--exec-timeout` seconds is killed with its whole group.

With a running service (`codex-limits service start --refresh-interval 60`), `watch` shows the alerts
of the service, which every client shares. Without one, it spawns its own server with background
refresh on (`--refresh-interval`), and so sees only the alerts of that process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any, Final

import anyio
import anyio.abc
import pydantic
from rich.text import Text

from app_server import env as environment
from app_server.cli.connection import connect
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.terminal import UI
from app_server.config import REFRESH_INTERVAL_ENV
from protocol import ext
from protocol.methods import POOL_ALERT

log = logging.getLogger(__name__)

EXEC_TIMEOUT: Final = 30.0
_STYLE: Final = {
    ext.AlertSeverity.INFO: "cyan",
    ext.AlertSeverity.WARNING: "yellow",
    ext.AlertSeverity.CRITICAL: "bold red",
}


def parse_command(text: str) -> list[str]:
    """`--exec` text as an argument vector (shell-style quoting, no shell)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None
    if not argv:
        raise ValueError("the command is empty")
    return argv


class AlertCommand:
    """Runs `argv` once per alert, with the alert on stdin, in the background of `tg`.

    Its stdout is discarded (ours may be a JSON stream) and its stderr is ours.
    """

    def __init__(self, argv: Sequence[str], timeout: float, tg: anyio.abc.TaskGroup) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self._tg = tg

    def start(self, alert: ext.AccountPoolAlert) -> None:
        self._tg.start_soon(self._run, alert.to_wire() + b"\n", alert.kind.value)

    async def _run(self, data: bytes, kind: str) -> None:
        name = self.argv[0]
        try:
            process = await anyio.open_process(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None, start_new_session=True
            )
        except OSError as exc:
            log.warning("alert command %s could not start: %s", name, exc)
            return
        try:
            with anyio.move_on_after(self.timeout) as scope:
                if process.stdin is not None:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await process.stdin.send(data)  # a command may well not read its input
                    await process.stdin.aclose()
                code = await process.wait()
            if scope.cancelled_caught:
                log.warning("alert command %s (%s) still ran after %g s; killed", name, kind, self.timeout)
            elif code != 0:
                log.warning("alert command %s (%s) exited with status %d", name, kind, code)
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                with anyio.CancelScope(shield=True):
                    await process.wait()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def render_alert(alert: ext.AccountPoolAlert) -> Text:
    stamp = time.strftime("%H:%M:%S", time.localtime(alert.emitted_at))
    text = Text(f"{stamp} ")
    text.append(f"{alert.severity.value:<8}", style=_STYLE.get(alert.severity, ""))
    text.append(f" {alert.message}")
    return text


async def follow(
    notifications: AsyncIterable[dict[str, Any]],
    ui: UI,
    commands: Sequence[AlertCommand] = (),
    scrub: Callable[[Any], Any] | None = None,
) -> None:
    """Show each alert among `notifications` and start the commands for it, until the stream ends.

    `scrub`: what the alert's text becomes before it is shown (`Server.scrub`: no simulated temp paths)."""
    async for message in notifications:
        if message.get("method") != POOL_ALERT.name:
            continue
        params = message.get("params") if scrub is None else scrub(message.get("params"))
        try:
            alert = ext.AccountPoolAlertNotification.model_validate(params).alert
        except pydantic.ValidationError as exc:
            log.warning("skipping an alert that does not parse: %s", exc.errors()[0].get("msg"))
            continue
        if ui.as_json:
            ui.emit_json(alert.model_dump(mode="json", by_alias=True), compact=True)
        else:
            ui.show(render_alert(alert))
        for command in commands:
            command.start(alert)


async def watch(
    ui: UI, *, simulate: bool, commands: Sequence[Sequence[str]], exec_timeout: float, refresh_interval: float
) -> Exit:
    # The spawned server refreshes in the background only when asked (unless our environment already says how often).
    overrides = (
        {}
        if environment.current().get(REFRESH_INTERVAL_ENV) is not None
        else {REFRESH_INTERVAL_ENV: f"{refresh_interval:g}"}
    )
    async with connect(simulate, log_level=ui.log_level, env=environment.child(overrides)) as server:
        ui.info.print(Text("watching for alerts · Ctrl-C to stop", style="dim"))
        async with anyio.create_task_group() as tg:
            runners = [AlertCommand(argv, exec_timeout, tg) for argv in commands]
            await follow(server.client.notifications, ui, runners, scrub=server.scrub)
        reason = await server.exit_reason("the server stopped")
    raise CommandFailed(Exit.SERVER, reason)
