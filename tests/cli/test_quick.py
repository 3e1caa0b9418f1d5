"""The operator commands on a running service, answered by the quick path (`cli/quick.py`, `service_session`,
`plain/`): what they import, that they say what the full commands say, and how they fail."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app_server.cli import exits, quick
from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.plain import account, credits, history, status, words
from app_server.cli.service_session import QUIET_METHODS, ServiceSession
from app_server.rpc import wsframe
from protocol import jsonrpc
from protocol.methods import SERVER_NOTIFICATIONS
from tests.support.cli import CLI, NOW, WAIT, cli, summary_of

HEAVY = ("rich", "pydantic", "pydantic_core", "anyio", "asyncio", "httpx", "protocol", "app_server.cli.render")
"""What the quick path must not import: each costs a few times the interpreter's own start-up."""


@pytest.fixture
def running(homes: dict[str, str]) -> Iterator[dict[str, str]]:
    """A simulated service on the data directory of `homes` (four made-up accounts), stopped afterwards."""
    started = cli(homes, "service", "start", "--simulate")
    assert started.returncode == 0, started.stderr
    try:
        yield homes
    finally:
        cli(homes, "service", "stop")


def imported(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `codex-limits ARGS` under `-X importtime`: the result, and every module it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from app_server.cli.launch import main; main()", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return result, modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["status", "--compact"],
        ["status", "--fail-above", "100"],
        ["history"],
        ["history", "--json"],
        ["refresh", "alice"],
        ["refresh", "bob", "--json"],
        ["credits"],
        ["credits", "--json"],
    ],
    ids=" ".join,
)
def test_a_command_on_a_running_service_imports_nothing_heavy(running: dict[str, str], args: list[str]) -> None:
    """The import budget, by module list: on a running service these print with the standard library only."""
    result, modules = imported(running, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "app_server.cli.quick" in modules  # it took the quick path ...
    assert heavy(modules) == []  # ... and nothing heavy came with it
    assert result.stdout.strip()


@pytest.mark.subprocess
def test_without_a_service_the_command_spawns_a_server_as_before(homes: dict[str, str]) -> None:
    result, modules = imported(homes, "status", "--simulate", "--compact")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("alice 100/92% ready:2 | bob 35/12% | carol sign-in | dave 30/10% avail:1")
    assert "anyio" in modules  # the full command, with its async client


def masked(text: str) -> str:
    """`text` with every number, duration, age and temporary path masked (times and reads move on between two
    runs: `in 4h` a second later may be `in 3h 59m`)."""
    text = re.sub(r"read (just now|\d+s ago)", "read AGO", text)
    text = re.sub(r"\b\d+[dhms]( \d+[dhms])?\b", "DURATION", text)
    text = re.sub(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?=\d)", "", text)  # `Tue 00:01` once a run passes midnight
    return re.sub(r"/tmp/\S+", "PATH", re.sub(r"\d+", "N", text))


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [["status"], ["status", "--compact"], ["history"], ["refresh", "carol"]], ids=" ".join)
def test_the_quick_path_says_what_the_full_command_says(running: dict[str, str], args: list[str]) -> None:
    quick = cli(running, *args)
    full = cli(running, *args, "-q")  # a log level asked for: the full command, through the same service
    assert (quick.returncode, masked(quick.stdout), masked(quick.stderr)) == (
        full.returncode,
        masked(full.stdout),
        masked(full.stderr),
    )


@pytest.mark.subprocess
def test_status_json_on_a_running_service_is_the_full_commands_json(running: dict[str, str]) -> None:
    quick = json.loads(cli(running, "status", "--json").stdout)
    full = json.loads(cli(running, "status", "--json", "-q").stdout)

    def stable(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(a["accountId"], a["status"], a["resetAction"], sorted(a), "forecast" in a) for a in items]

    assert stable(quick) == stable(full)
    assert [a["accountId"] for a in quick] == ["alice", "bob", "carol", "dave"]
    assert quick[0]["resetAction"]["readiness"] == "exhausted"


@pytest.mark.subprocess
def test_exit_statuses_and_error_lines_on_a_running_service(running: dict[str, str]) -> None:
    gate = cli(running, "status", "--fail-above", "50")
    assert gate.returncode == Exit.CHECK_FAILED
    assert gate.stderr == "codex-limits: above 50 %: alice 5h 100 %, alice weekly 92 %\n"
    unknown = cli(running, "refresh", "nobody", "--json")
    assert unknown.returncode == Exit.USAGE
    assert json.loads(unknown.stdout)["error"]["data"]["errorCode"] == "accountNotFound"
    assert unknown.stderr.startswith("codex-limits: unknown account 'nobody'")
    signin = cli(running, "refresh", "carol")
    assert signin.returncode == Exit.REFUSED
    assert "Problem" in signin.stdout and "codex login" in signin.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["credits"]], ids=" ".join)
def test_a_closed_stdout_ends_the_quick_path_quietly(running: dict[str, str], args: list[str]) -> None:
    """Like `codex-limits status | head -0`: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*CLI, *args],
            env=running,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (Exit.OUTPUT_CLOSED, b"")


# -- the plain views ------------------------------------------------------------------------------


def wire(account_id: str, **changes: Any) -> dict[str, Any]:
    return summary_of(account_id, **changes).model_dump(mode="json", by_alias=True)


def test_the_plain_status_view_has_a_block_per_account_and_the_notes() -> None:
    alice = wire("alice")
    bob = wire(
        "bob",
        status="reauthRequired",
        rateLimits=None,
        resetCredits=None,
        resetAction={"enabled": False, "disabledReason": "reauthRequired", "warning": "w"},
        error={"code": -32603, "message": "the saved sign-in expired"},
    )
    forecasts = {
        "accounts": [
            {
                "accountId": "alice",
                "windows": [
                    {
                        "limitId": "codex",
                        "window": "secondary",
                        "status": "projected",
                        "burnRatePerHour": 30,
                        "runsOutAt": NOW + 4_200,
                        "runsOutBeforeReset": True,
                    }
                ],
            }
        ],
        "minSamples": 3,
        "minSpanSeconds": 600,
        "lookbackSeconds": 10_800,
    }
    text = status.status_text([alice, bob], now=NOW, forecasts=forecasts)
    blocks = text.split("\n\n")
    assert blocks[0].splitlines()[0] == "alice  A label that is rather long for alice"
    facts = {line.split()[0]: line for line in blocks[0].splitlines()[1:]}
    assert facts["status"] == "  status   rate limited · pro · alice@example.com"
    assert facts["5h"].startswith("  5h       100% · resets in 2h 17m (")
    assert facts["weekly"].endswith(" · 30 %/h · runs out in 1h 10m")
    assert facts["saved"].startswith("  saved    3 · next expires in 8d (")
    assert facts["apply"] == "  apply    ready"
    assert blocks[1].splitlines()[1:] == [
        "  status   needs sign-in · pro · bob@example.com",
        "  usage    unknown",
        "  saved    —",
        "  apply    sign in again",
    ]
    footer = blocks[2].splitlines()
    assert footer[0].startswith("2 accounts · read just now (")
    assert footer[1] == "3 saved resets across 1 account (codex-limits credits lists them)"
    assert footer[2] == (  # summary_of counts alice's resets without listing them
        "alice: 3 saved resets upstream counted but did not list; "
        "bob: could not be read (needs sign-in); its saved resets are unknown"
    )
    assert footer[3].startswith("bob: the saved sign-in expired → sign in with `CODEX_HOME=/home/user/.codex-bob")


def test_the_one_line_form_and_the_gate_read_the_wire_json() -> None:
    dave = wire("dave", resetAction={"enabled": True, "disabledReason": None, "warning": "w", "readiness": "available"})
    carol = wire("carol", status="reauthRequired", rateLimits=None)
    assert status.compact_line([wire("alice"), carol, dave]) == (
        "alice 100/7% ready:3 | carol sign-in | dave 100/7% avail:3"
    )
    assert status.above([wire("alice"), carol], 50) == ["alice 5h 100 %"]
    older = wire("alice")
    del older["resetAction"]["readiness"]  # an older server: worked out from the windows
    assert status.with_readiness(older)["resetAction"]["readiness"] == words.EXHAUSTED


def test_the_plain_history_and_account_views() -> None:
    entries = [
        {
            "startedAt": NOW,
            "accountId": "alice",
            "status": "finished",
            "outcome": "reset",
            "availableBefore": 2,
            "availableAfter": 1,
            "idempotencyKey": "k-1",
            "error": None,
        },
        {"startedAt": NOW, "accountId": "bob", "status": "pending", "availableBefore": None, "idempotencyKey": "k-2"},
    ]
    lines = history.history_text(entries).splitlines()
    assert re.fullmatch(r"\S+ \S+  alice  reset applied    saved 2 → 1  key k-1", lines[0]), lines
    assert re.fullmatch(r"\S+ \S+  bob    outcome unknown  saved \?      key k-2", lines[1]), lines
    assert history.history_text([]) == "No apply attempts recorded yet.\n"
    detail = account.account_text(wire("alice"), now=NOW).splitlines()
    assert detail[0] == "Account       A label that is rather long for alice  alice · pro · alice@example.com"
    assert detail[-1] == "Apply         ready: a window is used up; applying spends one saved reset"
    assert account.refresh_failure(wire("alice")) is None


def test_the_plain_credits_view_lists_each_reset_and_what_is_missing() -> None:
    inventory = {
        "credits": [
            {"accountId": "dave", "label": "Dave", "creditId": "c-1", "title": "Full reset", "expiresAt": NOW + 3_600},
            {"accountId": "alice", "label": "Alice", "creditId": "c-22", "title": None, "expiresAt": None},
        ],
        "totalAvailable": 4,
        "unlisted": [
            {"accountId": "bob", "availableCount": 2, "listedCount": 0, "status": "active"},
            {"accountId": "carol", "availableCount": None, "listedCount": 0, "status": "reauthRequired"},
        ],
        "generatedAt": NOW,
    }
    lines = credits.credits_text(inventory, now=NOW).splitlines()
    assert re.fullmatch(r"\S+ \S+ \S+  in 1h  dave   c-1  Full reset", lines[0]), lines
    assert lines[1].split() == ["never", "never", "alice", "c-22"]
    assert lines[2] == "bob: 2 saved resets upstream counted but did not list"
    assert lines[3] == "carol: could not be read (needs sign-in); its saved resets are unknown"
    assert lines[4].startswith("4 saved resets across 3 accounts · read ")
    assert lines[5] == credits.SPEND_HINT
    assert credits.credits_text({"credits": [], "unlisted": [], "totalAvailable": 0}, now=NOW).startswith(
        "No saved resets in the pool.\n"
    )


def test_the_quick_paths_constants_are_the_protocols() -> None:
    assert set(QUIET_METHODS) == set(SERVER_NOTIFICATIONS)
    assert (exits.INVALID_REQUEST, exits.INTERNAL_ERROR) == (jsonrpc.INVALID_REQUEST, jsonrpc.INTERNAL_ERROR)


# -- the session, against a service that misbehaves -----------------------------------------------


def _serve(sock: socket.socket, answer: bytes | None) -> None:
    """Read one request frame, then send `answer` (a JSON text) or, when None, close the connection."""
    reader = wsframe.FrameReader()
    frames: list[tuple[int, bytes]] = []
    while not frames:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        frames = reader.feed(chunk)
    if answer is None:
        sock.close()
        return
    sock.sendall(wsframe.encode_frame(wsframe.OP_TEXT, answer, mask=False))


def session_with(answer: bytes | None) -> tuple[ServiceSession, threading.Thread]:
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=_serve, args=(theirs, answer), daemon=True)
    thread.start()
    return ServiceSession(ours, b"", pid=4242), thread


def test_a_service_that_goes_away_mid_apply_leaves_the_outcome_unknown() -> None:
    session, thread = session_with(None)
    with pytest.raises(CommandFailed) as caught:
        session.request("accountPool/resetCredit/apply", {"accountId": "alice", "idempotencyKey": "key-7"})
    thread.join(WAIT)
    assert caught.value.code == Exit.SERVER
    assert "the codex-limits service (pid 4242) stopped before answering accountPool/resetCredit/apply" in (
        caught.value.message
    )
    assert 're-send the same idempotencyKey "key-7"' in caught.value.message or "key-7" in caught.value.message


def test_an_error_answer_is_the_commands_failure() -> None:
    error = {"code": -32600, "message": "nothing to spend", "data": {"disabledReason": "noCredit"}}
    session, thread = session_with(json.dumps({"id": 0, "error": error}).encode())
    with pytest.raises(CommandFailed) as caught:
        session.request("accountPool/refresh", {"accountId": "alice"})
    thread.join(WAIT)
    assert (caught.value.code, caught.value.message) == (Exit.REFUSED, "nothing to spend")
    assert caught.value.payload == {"error": error}


def test_other_ids_and_notifications_are_skipped_and_the_right_answer_taken() -> None:
    ours, theirs = socket.socketpair()

    def serve() -> None:
        reader = wsframe.FrameReader()
        while not reader.feed(theirs.recv(1 << 16)):
            pass
        for payload in (b'{"id": 99, "result": 1}', b'{"method": "x"}', b'{"id": 0, "result": {"ok": 1}}'):
            theirs.sendall(wsframe.encode_frame(wsframe.OP_TEXT, payload, mask=False))
            time.sleep(0)  # several frames, several segments

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ServiceSession(ours, b"", pid=1).request("accountPool/list") == {"ok": 1}
    thread.join(WAIT)


def test_frames_that_span_two_reads_reach_the_next_request() -> None:
    """One segment holds the first answer and the start of the second; the rest comes after the second request."""
    ours, theirs = socket.socketpair()
    first = wsframe.encode_frame(wsframe.OP_TEXT, b'{"id": 0, "result": "one"}', mask=False)
    second = wsframe.encode_frame(wsframe.OP_TEXT, b'{"id": 1, "result": "two"}', mask=False)

    def serve() -> None:
        reader = wsframe.FrameReader()
        while not reader.feed(theirs.recv(1 << 16)):
            pass
        theirs.sendall(first + second[:5])
        while not reader.feed(theirs.recv(1 << 16)):
            pass
        theirs.sendall(second[5:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    session = ServiceSession(ours, b"", pid=1)
    assert session.request("accountPool/list") == "one"
    assert session.request("accountPool/forecast") == "two"
    thread.join(WAIT)


def test_a_service_that_closes_is_said_as_the_full_command_says_it() -> None:
    session, thread = session_with(None)
    with pytest.raises(CommandFailed) as caught:
        session.request("accountPool/list")
    thread.join(WAIT)
    assert (caught.value.code, caught.value.message) == (
        Exit.SERVER,
        "the codex-limits service (pid 4242) stopped before answering accountPool/list",
    )


def test_an_answer_that_is_not_json_is_a_protocol_failure_at_once() -> None:
    session, thread = session_with(b"{not json")
    with pytest.raises(CommandFailed) as caught:
        session.request("accountPool/list")
    thread.join(WAIT)
    assert caught.value.code == Exit.SERVER
    assert caught.value.message.startswith("protocol failure: the server sent something unexpected (not JSON: ")


def test_an_unexpected_answer_is_one_line_and_exit_5_never_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`accountPool/list` answered with a null result: the command fails as the full one does, in one line."""
    session, thread = session_with(b'{"id": 0, "result": null}')
    monkeypatch.setattr(quick, "open_session", lambda: session)
    monkeypatch.setattr(quick, "is_terminal", lambda stream: False)
    args = argparse.Namespace(
        watch=None, timeout=None, json=False, compact=False, fail_above=None, simulate=False, log_level=None
    )
    assert quick.status(args) == Exit.SERVER
    thread.join(WAIT)
    said = capsys.readouterr()
    assert said.err.startswith("codex-limits: internal error: TypeError: ") and said.err.count("\n") == 1
    assert said.out == ""
