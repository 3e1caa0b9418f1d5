"""`codex-limits history --usage`: durations, the CSV export and the table (issue #12)."""

from __future__ import annotations

import csv
import io

import pytest
from rich.console import Console

from app_server.cli.main import main
from app_server.cli.parser import build_parser
from app_server.cli.usage import CSV_COLUMNS, parse_duration, sparkline, usage_table, write_csv
from protocol import ext

T0 = 1_800_000_000
HOUR = 3600


def history() -> ext.AccountPoolUsageHistoryResponse:
    return ext.AccountPoolUsageHistoryResponse(
        account_id="alice",
        windows=[
            ext.UsageWindowHistory(
                limit_id="codex",
                window=ext.UsageWindow.PRIMARY,
                window_minutes=300,
                samples=[
                    ext.UsagePoint(taken_at=T0, used_percent=10, resets_at=T0 + 4 * HOUR),
                    ext.UsagePoint(taken_at=T0 + HOUR, used_percent=40, resets_at=T0 + 4 * HOUR),
                ],
                burn_rate_per_hour=30.0,
                runs_out_at=T0 + 3 * HOUR,
            ),
            ext.UsageWindowHistory(
                limit_id="codex_other",
                window=ext.UsageWindow.SECONDARY,
                window_minutes=10_080,
                samples=[ext.UsagePoint(taken_at=T0 + HOUR, used_percent=3, resets_at=None)],
                burn_rate_per_hour=None,
                runs_out_at=None,
            ),
        ],
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("45m", 2700), ("24h", 86_400), ("7d", 604_800), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0", "3y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration|at least 1 second"):
        parse_duration(text)


def test_csv_has_one_row_per_sample() -> None:
    out = io.StringIO()
    write_csv(history(), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1:] == [
        ["alice", "codex", "primary", "300", str(T0), "2027-01-15T08:00:00Z", "10", str(T0 + 4 * HOUR)],
        ["alice", "codex", "primary", "300", str(T0 + HOUR), "2027-01-15T09:00:00Z", "40", str(T0 + 4 * HOUR)],
        ["alice", "codex_other", "secondary", "10080", str(T0 + HOUR), "2027-01-15T09:00:00Z", "3", ""],
    ]


def test_the_table_shows_each_window_its_rate_and_run_out() -> None:
    console = Console(file=io.StringIO(), width=160, highlight=False)
    console.print(usage_table(history(), now=T0 + HOUR))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    five_hour = next(line for line in text.splitlines() if "│ 5h" in line)
    assert "40%" in five_hour and "30.0 %/h" in five_hour and "in 2h" in five_hour and "in 3h" in five_hour
    weekly = next(line for line in text.splitlines() if "codex_other weekly" in line)
    assert "3%" in weekly and weekly.count(" - ") >= 2  # no rate, no run-out, no reset time


def test_an_empty_history_says_so() -> None:
    empty = ext.AccountPoolUsageHistoryResponse(account_id="bob", windows=[])
    assert "no usage recorded yet" in str(usage_table(empty, now=T0))


def test_sparkline_runs_low_to_high_and_thins_to_its_width() -> None:
    assert sparkline([0, 50, 100]) == "▁▄█"
    assert len(sparkline(list(range(100)), width=10)) == 10


def test_usage_history_needs_an_account(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["history", "--usage"])
    assert exit_info.value.code == 2
    assert "history --usage needs an ACCOUNT" in capsys.readouterr().err


def test_usage_flags_parse() -> None:
    args = build_parser().parse_args(["history", "alice", "--usage", "--since", "7d", "--csv", "--limit", "50"])
    assert (args.account, args.usage, args.since, args.csv, args.limit) == ("alice", True, 604_800, True, 50)
