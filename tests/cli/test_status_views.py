"""`status` as people watch it: progress per account, a stalled account, narrow terminals, status lines,
the quota gate and `--watch` on a pipe."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from app_server.cli import render, status
from app_server.cli.exits import Exit
from tests.support.cli import (
    CLI,
    NOW,
    WAIT,
    assert_fits,
    cli,
    flat,
    read_line,
    rendered_text,
    run_with_terminal_stdout,
    summary_of,
)


@pytest.mark.subprocess
def test_a_stalled_account_does_not_hold_back_the_rest(fast_and_stalled: dict[str, str]) -> None:
    # Without --timeout this would wait for the 600 s stall and the subprocess bound (WAIT) would fail the test.
    # The deadline is generous: on a loaded machine spawning the server and reading the fast account took over 3 s.
    code, seen = run_with_terminal_stdout({**fast_and_stalled, "TERM": "xterm"}, ["status", "--timeout", "10"])
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert "reading" in text  # the spinner row of the pending account(s)
    final = flat(text.split("\x1b[?25h")[-1])  # after the live display ended (cursor shown again)
    assert "Fast" in final and "50%" in final
    assert "stalled" in final and "no answer in 10 s" in final


@pytest.mark.subprocess
def test_timeout_json_keeps_one_entry_per_account(fast_and_stalled: dict[str, str]) -> None:
    result = cli(fast_and_stalled, "status", "--timeout", "10", "--json")
    assert result.returncode == 0, result.stderr
    rows = {a["accountId"]: a for a in json.loads(result.stdout)}
    assert rows["fast"]["status"] == "active"
    assert rows["stalled"]["status"] == "unavailable"
    assert "no answer within 10 s" in rows["stalled"]["error"]["message"]


@pytest.mark.subprocess
def test_compact_is_one_short_line(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", "--compact")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    line = result.stdout.strip()
    assert line.startswith("alice 100/92% ready:2 | bob 35/12% | carol sign-in | dave 30/10% avail:1")


@pytest.mark.subprocess
@pytest.mark.parametrize(("limit", "code"), [("95", Exit.CHECK_FAILED), ("100", Exit.OK)])
def test_fail_above_is_a_quota_gate(homes: dict[str, str], limit: str, code: int) -> None:
    result = cli(homes, "status", "--simulate", "--compact", "--fail-above", limit)
    assert result.returncode == code, result.stderr
    if code:
        assert "alice 5h 100 %" in result.stderr and "dave" not in result.stderr


@pytest.mark.subprocess
def test_watch_on_a_pipe_prints_one_line_per_read(homes: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*CLI, "status", "--simulate", "--watch", "5"],
        env=homes,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = [read_line(process.stdout.fileno()).decode() for _ in range(2)]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert process.returncode == 0, err
    for line in lines:
        stamp, rest = line.split(" ", 1)
        assert stamp.count(":") == 2
        assert rest.startswith("alice 100/92% ready:2 | bob")


def test_watch_backs_off_after_errors_and_recovers() -> None:
    waits = [5.0]
    for error in (True, True, True, False):
        waits.append(status.next_wait(waits[-1], 5.0, error=error))
    assert waits == [5.0, 10.0, 20.0, 40.0, 5.0]
    assert status.next_wait(200.0, 5.0, error=True) == status.MAX_BACKOFF


@pytest.mark.subprocess
def test_watch_refuses_a_too_short_interval(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", "--watch", "1")
    assert result.returncode == Exit.USAGE
    assert "at least 5 seconds" in result.stderr


# -- narrow terminals --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [30, 35, 40, 50, 59, 60, 80, 120, 200])
def test_every_width_keeps_ids_and_words_whole(width: int) -> None:
    rows: list[render.Row] = [
        summary_of("a-very-long-account-id-indeed"),
        summary_of("bob"),
        render.Waiting("carol"),
        render.Waiting("dave", timed_out=10),
    ]
    text = rendered_text(render.status_table(rows, now=NOW, width=width), width)
    assert_fits(text, width)
    for account_id in ("bob", "carol", "dave"):
        assert account_id in text
    if width < render.NARROW:
        assert "a-very-long-account-id" in text  # the heading of its block, never folded letter by letter
    lone = [line for line in text.splitlines() if len(line.strip()) == 1 and line.strip().isalnum()]
    assert not lone, f"a letter alone on a line at {width} columns: {text}"


@pytest.mark.subprocess
def test_status_at_40_columns_is_one_block_per_account(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", columns=40, terminal=True)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, 40)
    headings = [line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")]
    for account_id in ("alice", "bob", "carol", "dave"):
        assert account_id in headings
    assert "apply  ready" in result.stdout and "apply  available" in result.stdout
