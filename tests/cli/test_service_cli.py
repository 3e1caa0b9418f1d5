"""`codex-limits service start|status|stop` as a user runs them: output closed early, JSON field names."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from app_server.cli.exits import Exit
from tests.support.cli import CLI, WAIT, cli

pytestmark = pytest.mark.subprocess

SIMULATED_IDS = ["alice", "bob", "carol", "dave"]


@pytest.mark.parametrize("args", [["service", "status"], ["service", "status", "--json"]])
def test_a_reader_that_stopped_early_gets_141_and_no_traceback(homes: dict[str, str], args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -c 1` that has already exited: every write fails with EPIPE
    try:
        result = subprocess.run(
            [*CLI, *args],
            env=homes,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            capture_output=False,
            stderr=subprocess.PIPE,
            text=True,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (Exit.OUTPUT_CLOSED, "")


def test_service_status_json_is_camel_case_like_every_other_json(homes: dict[str, str]) -> None:
    started = cli(homes, "service", "start")
    assert started.returncode == 0, started.stderr
    try:
        status = cli(homes, "service", "status", "--json")
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert set(state) == {"running", "pid", "socket", "listen", "startedAt", "codexHome", "tokenFile"}
        assert state["running"] is True and state["codexHome"] == homes["CODEX_HOME"]
    finally:
        stopped = cli(homes, "service", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(cli(homes, "service", "status", "--json").stdout) == {"running": False}


def test_service_start_simulate_serves_the_made_up_accounts_to_status_and_stops(homes: dict[str, str]) -> None:
    """`service start --simulate`: no account needed; `status` (without --simulate) goes through it."""
    started = cli(homes, "service", "start", "--simulate")
    assert started.returncode == 0, started.stderr
    try:
        assert "(simulated accounts)" in started.stdout
        state = json.loads(cli(homes, "service", "status", "--json").stdout)
        assert state["running"] is True and state["simulated"] is True
        assert state["codexHome"] != homes["CODEX_HOME"]  # the simulated world's, not the operator's
        status = cli(homes, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert sorted(a["accountId"] for a in json.loads(status.stdout)) == sorted(SIMULATED_IDS)
        listed = cli(homes, "credits", "--json")  # the inventory, from the service too
        assert listed.returncode == 0, listed.stderr
        credits = json.loads(listed.stdout)["credits"]
        assert [c["creditId"] for c in credits] == ["credit-alice-1", "credit-dave-1", "credit-alice-2"]
    finally:
        stopped = cli(homes, "service", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(cli(homes, "service", "status", "--json").stdout) == {"running": False}
