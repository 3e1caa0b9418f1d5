"""The pool-wide inventory of saved resets and the forecasts in the CLI (issue #23): `credits`, and what
`status` adds (a footer on the saved resets, a forecast line under each window)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from app_server.cli.render.credits import credits_view
from app_server.cli.render.forecast import forecast_line
from app_server.cli.render.words import wire
from app_server.store.base import UsageSample
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from app_server.store.sqlite import SqliteStore
from protocol import ext
from tests.support.cli import CLI, DETAILS, USAGE, WAIT, assert_fits, cli, details_body, flat, rendered_text, usage_body
from tests.support.mock_backend import MockBackend

DAY = 86_400
HOUR = 3_600
EXACT = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"


def _utc(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TZ": "UTC"}


@pytest.mark.subprocess
def test_credits_lists_every_saved_reset_by_expiry_across_accounts(homes: dict[str, str]) -> None:
    before = int(time.time())
    result = cli(_utc(homes), "credits", "--simulate", columns=100, terminal=True)
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(EXACT, line)]
    assert [row.split()[-1] for row in rows] == ["credit-alice-1", "credit-dave-1", "credit-alice-2"]
    assert [row.split()[-2] for row in rows] == ["alice", "dave", "alice"]
    # The exact expiry of each: the simulated world gives them 7, 12 and 21 days from its start.
    for row, days in zip(rows, (7, 12, 21), strict=True):
        match = re.match(EXACT, row)
        assert match is not None
        shown = int(datetime.strptime(match.group(1) + "+0000", "%Y-%m-%d %H:%M:%S%z").timestamp())
        assert before + days * DAY <= shown <= after + days * DAY
    assert "in 6d 23h" in rows[0] or "in 7d" in rows[0]  # the countdown, next to the exact time
    text = flat(result.stdout)
    assert "carol: could not be read (needs sign-in); its saved resets are unknown" in text
    assert "3 saved resets across 2 accounts" in text
    assert "bob" not in text  # no saved reset: nothing to list, nothing unknown
    piped = cli(_utc(homes), "credits", "--simulate")  # a pipe: a line per saved reset, in the same order
    assert [re.findall(r"credit-\S+", line)[0] for line in piped.stdout.splitlines() if re.match(EXACT, line)] == [
        "credit-alice-1",
        "credit-dave-1",
        "credit-alice-2",
    ]


@pytest.mark.subprocess
@pytest.mark.parametrize("width", [50, 80])
def test_credits_fits_the_terminal(homes: dict[str, str], width: int) -> None:
    result = cli(homes, "credits", "--simulate", columns=width, terminal=True)
    assert result.returncode == 0, result.stderr
    assert_fits(result.stdout, width)
    text = flat(result.stdout)
    assert text.index("credit-alice-1") < text.index("credit-dave-1") < text.index("credit-alice-2")


@pytest.mark.subprocess
def test_credits_json_is_the_methods_result(homes: dict[str, str]) -> None:
    result = cli(homes, "credits", "--simulate", "--json")
    assert result.returncode == 0, result.stderr
    answer = ext.AccountPoolResetCreditsListResponse.model_validate_json(result.stdout)
    assert [(c.account_id, c.credit_id) for c in answer.credits] == [
        ("alice", "credit-alice-1"),
        ("dave", "credit-dave-1"),
        ("alice", "credit-alice-2"),
    ]
    expiries = [c.expires_at for c in answer.credits]
    assert expiries == sorted(e for e in expiries if e is not None)
    assert answer.total_available == 3
    assert [(u.account_id, u.available_count, u.status) for u in answer.unlisted] == [
        ("carol", None, ext.AccountStatus.REAUTH_REQUIRED)
    ]


@pytest.mark.subprocess
def test_status_footer_names_the_inventory_and_each_window_forecast(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", columns=160)
    assert result.returncode == 0, result.stderr
    text = flat(result.stdout)
    assert re.search(r"3 saved resets across 2 accounts; next expires in (6d 23h|7d) \(alice, ", text), text
    assert "carol: could not be read (needs sign-in); its saved resets are unknown" in text
    # A fresh simulated world has one read per window: too little history, said plainly, and what it takes.
    assert "too little history" in result.stdout.split("4 accounts")[0]
    assert "too little history: a forecast needs 3 reads over at least 10m within 3h" in text


@pytest.mark.subprocess
def test_status_json_adds_forecasts_and_keeps_every_member(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["accountId"]: row for row in json.loads(result.stdout)}
    for row in rows.values():  # the members of the summary, as before
        assert {"accountId", "label", "status", "rateLimits", "resetCredits", "resetAction"} <= set(row)
        assert row["resetAction"]["readiness"] in (None, "exhausted", "available")
    windows = rows["bob"]["forecast"]
    assert [(w["limitId"], w["window"], w["status"]) for w in windows] == [
        ("codex", "primary", "tooLittleHistory"),
        ("codex", "secondary", "tooLittleHistory"),
    ]
    assert rows["alice"]["forecast"][0]["status"] == "exhausted"
    assert rows["carol"]["forecast"] == []  # never read: no history at all


def _seed_usage(data_home: Path, samples: list[UsageSample]) -> None:
    async def seed() -> None:
        store = SqliteStore(data_home / LEDGER_FILE)
        try:
            await store.record_usage(samples)
        finally:
            store.close()

    anyio.run(seed)


@pytest.fixture
def with_history(signed_in: dict[str, str], backend: MockBackend) -> dict[str, str]:
    """The `default` account at 80 % of its 5h window, read at 20 % two hours ago and 50 % one hour ago (the
    window resets in 3 hours); its weekly window was never read before."""
    now = int(time.time())
    body: dict[str, Any] = usage_body(80, 0, secondary=10)
    body["rate_limit"]["primary_window"].update(reset_after_seconds=3 * HOUR, reset_at=now + 3 * HOUR)
    body["rate_limit"]["secondary_window"].update(reset_after_seconds=5 * DAY, reset_at=now + 5 * DAY)
    backend.set_routes({f"GET {USAGE}": {"json": body}, f"GET {DETAILS}": {"json": details_body(0)}})
    data = Path(signed_in["CODEX_LIMITS_HOME"])
    data.mkdir(exist_ok=True)
    _seed_usage(
        data,
        [
            UsageSample("default", "codex", "primary", now - 2 * HOUR, 20, 300, now + 3 * HOUR),
            UsageSample("default", "codex", "primary", now - HOUR, 50, 300, now + 3 * HOUR),
        ],
    )
    return signed_in


@pytest.mark.subprocess
def test_a_window_that_runs_out_before_it_resets_says_when(with_history: dict[str, str]) -> None:
    result = cli(with_history, "status", columns=160, terminal=True)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("1 account")[0]
    # 60 points in about two hours: about 30 %/h, so the last 20 % last about 40 minutes, before the reset in 3h.
    match = re.search(r"(\d+(?:\.\d+)?) %/h · runs out in (\d+)m", table)
    assert match is not None, result.stdout
    assert 25 < float(match.group(1)) <= 30
    assert 35 <= int(match.group(2)) <= 48
    assert "too little history" in table  # the weekly window: its first read
    folded = cli(with_history, "status", columns=80, terminal=True)  # below 140 columns: the same on two lines
    assert folded.returncode == 0, folded.stderr
    lines = folded.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "%/h" in line)
    assert re.search(r"runs out in \d+m", lines[at + 1]), folded.stdout
    assert "too little " in folded.stdout
    assert "No saved resets in the pool." in result.stdout
    piped = cli(with_history, "status")  # a pipe: the plain view, a line per window
    assert piped.returncode == 0, piped.stderr
    assert re.search(r"^  5h +\d+% · resets in .* · \d+(\.\d+)? %/h · runs out in \d+m$", piped.stdout, re.M), (
        piped.stdout
    )
    assert re.search(r"^  weekly +\d+% · .* · too little history$", piped.stdout, re.M), piped.stdout

    again = cli(with_history, "status", "--json")
    assert again.returncode == 0, again.stderr
    primary, weekly = json.loads(again.stdout)[0]["forecast"]
    assert primary["status"] == "projected" and primary["runsOutBeforeReset"] is True
    # the two seeded reads and those of these four commands (samples are kept per second: two reads in one
    # second are one sample)
    assert 3 <= primary["sampleCount"] <= 6
    assert 25 < primary["burnRatePerHour"] <= 30
    assert weekly["status"] == "tooLittleHistory" and "too little history" in weekly["message"]


@pytest.mark.subprocess
def test_credits_with_none_saved_and_some_not_listed(signed_in: dict[str, str], backend: MockBackend) -> None:
    backend.set_routes({f"GET {USAGE}": {"json": usage_body(50, 0)}, f"GET {DETAILS}": {"json": details_body(0)}})
    result = cli(signed_in, "credits")
    assert result.returncode == 0, result.stderr
    assert "No saved resets in the pool." in result.stdout
    assert "0 saved resets across 0 accounts" in result.stdout

    # The details read fails: upstream's count of two is all there is. The account is named with its count,
    # never dropped and never mistaken for an account without saved resets.
    backend.set_routes(
        {
            f"GET {USAGE}": {"json": usage_body(50, 2)},
            f"GET {DETAILS}": {"status": 500, "json": {"error": "down"}},
        }
    )
    result = cli(signed_in, "credits")
    assert result.returncode == 0, result.stderr
    text = flat(result.stdout)
    assert "No saved resets listed." in text, result.stdout
    assert "default: 2 saved resets upstream counted but did not list" in text, result.stdout
    assert "2 saved resets across 1 account" in text


def _credit(account: str, credit: str, expires_at: int | None) -> ext.PoolResetCredit:
    return ext.PoolResetCredit(
        account_id=account,
        label=account.title(),
        credit_id=credit,
        reset_type="codexRateLimits",
        granted_at=0,
        expires_at=expires_at,
    )


@pytest.mark.parametrize("width", [100, 50])
def test_the_view_keeps_the_servers_order_and_says_when(width: int) -> None:
    now = 1_800_000_000
    inventory = ext.AccountPoolResetCreditsListResponse(
        credits=[
            _credit("bob", "b-1", now + 2 * DAY + 4 * HOUR),
            _credit("alice", "a-1", now + 9 * DAY),
            _credit("alice", "a-2", None),
        ],
        total_available=3,
        unlisted=[],
        generated_at=now,
    )
    text = flat(rendered_text(credits_view(inventory, now=now, width=width), width))
    assert text.index("b-1") < text.index("a-1") < text.index("a-2")
    assert "in 2d 4h" in text and "in 9d" in text and "never" in text
    assert "3 saved resets across 2 accounts" in text


def test_a_forecast_line_with_a_known_history() -> None:
    now = 1_800_000_000
    forecast = ext.WindowForecast(
        limit_id="codex",
        window=ext.UsageWindow.PRIMARY,
        window_minutes=300,
        status=ext.ForecastStatus.PROJECTED,
        used_percent=65,
        resets_at=now + 3 * HOUR,
        burn_rate_per_hour=30.0,
        runs_out_at=now + 70 * 60,
        runs_out_before_reset=True,
        sample_count=3,
        span_seconds=2 * HOUR,
        measured_at=now,
        message="5h: 30 %/h over the last 2h; runs out in 1h 10m, 1h 50m before it resets",
    )
    line = forecast_line(wire(forecast), now=now)
    assert line is not None and line.plain == "30 %/h · runs out in 1h 10m"
    later = forecast.model_copy(update={"runs_out_at": now + 4 * HOUR, "runs_out_before_reset": False})
    line = forecast_line(wire(later), now=now)
    assert line is not None and line.plain == "30 %/h"  # it resets first: no alarm
    short = forecast.model_copy(update={"status": ext.ForecastStatus.TOO_LITTLE_HISTORY, "burn_rate_per_hour": None})
    line = forecast_line(wire(short), now=now)
    assert line is not None and line.plain == "too little history"


@pytest.mark.subprocess
def test_watch_on_a_terminal_redraws_the_footer_and_forecasts(homes: dict[str, str]) -> None:
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "status", "--simulate", "--watch", "5"],
        env={**homes, "TERM": "xterm", "COLUMNS": "160"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + WAIT
        while b"saved resets across" not in seen or b"too little history" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no footer within {WAIT} s: {seen!r}"
            ready, _, _ = select.select([master], [], [], remaining)
            if ready:
                seen += os.read(master, 65536)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert b"3 saved resets across 2 accounts" in seen
