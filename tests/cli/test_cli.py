"""The operator CLI (`codex-limits status|apply|refresh|history|accounts|demo`) as a person or a script runs it.

Most tests run the installed `codex-limits` in a real subprocess, against `--simulate` or a MockBackend
standing in for ChatGPT, and look only at what a user sees: stdout, one stderr line, the exit status.
`$CODEX_HOME` and `$CODEX_LIMITS_HOME` always point into the test's temp dir.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app_server.cli import render
from app_server.cli.exits import EXIT_MEANING, Exit
from protocol import ext
from tests.support.cli import (
    CLI,
    NOW,
    WAIT,
    assert_fits,
    cli,
    consumes,
    details_body,
    flat,
    limited,
    one_error_line,
    read_line,
    rendered_text,
    run_on_terminal,
    summary_of,
)
from tests.support.mock_backend import MockBackend

USAGE = "/api/codex/usage"
DETAILS = "/api/codex/rate-limit-reset-credits"


# -- arguments and help ------------------------------------------------------------------------


@pytest.mark.subprocess
def test_help_documents_commands_and_exit_statuses(homes: dict[str, str]) -> None:
    result = cli(homes, "--help")
    assert result.returncode == 0
    for command in ("status", "apply", "refresh", "history", "accounts", "demo"):
        assert command in result.stdout
    for code in (Exit.OK, Exit.USAGE, Exit.REFUSED, Exit.UPSTREAM, Exit.SERVER):
        assert f"  {int(code)} " in result.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args",
    [("apply",), ("status", "--watch", "0"), ("history", "--limit", "x"), ("accounts",), ("frobnicate",)],
)
def test_bad_arguments_exit_2(homes: dict[str, str], args: tuple[str, ...]) -> None:
    result = cli(homes, *args)
    assert result.returncode == Exit.USAGE
    assert "usage: codex-limits" in result.stderr


def test_exit_codes_are_the_documented_ones() -> None:
    assert {c.name: int(c) for c in Exit} == {
        "OK": 0,
        "CHECK_FAILED": 1,
        "USAGE": 2,
        "REFUSED": 3,
        "UPSTREAM": 4,
        "SERVER": 5,
        "INTERRUPTED": 130,
        "OUTPUT_CLOSED": 141,
    }
    assert set(EXIT_MEANING) == set(Exit)


# -- status ------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("width", [80, 160])
def test_status_table_fits_the_terminal(homes: dict[str, str], width: int) -> None:
    result = cli(homes, "status", "--simulate", columns=width, terminal=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the child's warnings (carol's failed token refresh) stay out of the way
    out = result.stdout
    assert_fits(out, width)
    for expected in ("Alice (Pro)", "alice", "Bob (Plus)", "Carol (Team)", "rate limited", "needs sign-in"):
        assert expected in out
    assert "100%" in out and "resets in " in out
    assert "ready" in out and "no saved reset" in out and "sign in again" in out
    assert "4 accounts" in out
    assert "available" in out  # dave: a credit, nothing used up
    if width >= render.WIDE:
        assert "Plan" in out and "alice@example.com" in out and "next expires in " in out
    else:
        assert "alice@example.com" not in out


@pytest.mark.subprocess
def test_status_json_is_the_accounts_array(homes: dict[str, str]) -> None:
    result = cli(homes, "status", "--simulate", "--json")
    assert result.returncode == 0, result.stderr
    accounts = json.loads(result.stdout)
    assert [a["accountId"] for a in accounts] == ["alice", "bob", "carol", "dave"]
    summaries = [ext.AccountSummary.model_validate(a) for a in accounts]
    assert summaries[0].reset_credits is not None and summaries[0].reset_credits.available_count == 2
    assert summaries[1].reset_action.disabled_reason is ext.ResetDisabledReason.NO_CREDIT
    assert summaries[2].status is ext.AccountStatus.REAUTH_REQUIRED
    assert "pendingApply" in accounts[0]  # raw wire form: nulls are kept


@pytest.mark.subprocess
def test_status_watch_relists_until_ctrl_c_and_exits_0(homes: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*CLI, "status", "--simulate", "--json", "--watch", "5"],
        env=homes,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = [read_line(process.stdout.fileno()) for _ in range(2)]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert process.returncode == 0, err
    assert b"Traceback" not in err
    for line in lines:
        assert [a["accountId"] for a in json.loads(line)] == ["alice", "bob", "carol", "dave"]


# -- apply -------------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_apply_yes_spends_one_reset_and_shows_before_and_after(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "alice", "--simulate", "--yes")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_fits(out, 80)
    out = flat(out)
    assert "cannot be undone" in out
    assert "Reset applied on alice" in out
    assert "Before" in out and "After" in out
    assert "Saved resets: 2 → 1 (1 left)." in out


@pytest.mark.subprocess
def test_apply_json_prints_the_response(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "alice", "--simulate", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    response = ext.AccountPoolApplyResponse.model_validate(json.loads(result.stdout))
    assert response.outcome.value == "reset"
    assert response.replayed is False
    assert response.before.reset_credits is not None and response.before.reset_credits.available_count == 2
    assert response.after is not None and response.after.reset_credits is not None
    assert response.after.reset_credits.available_count == 1
    assert "Reset applied" in result.stderr  # the human story goes to stderr, stdout stays JSON


@pytest.mark.subprocess
def test_apply_without_a_terminal_or_yes_refuses(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "alice", "--simulate")
    assert result.returncode == Exit.REFUSED
    line = one_error_line(result)
    assert "--yes" in line and "nothing was spent" in line
    assert "Alice (Pro)" in result.stdout  # it showed what it would have done
    assert "Reset applied" not in result.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize("yes", [False, True])
def test_apply_on_an_account_without_credit_is_refused(homes: dict[str, str], yes: bool) -> None:
    result = cli(homes, "apply", "bob", "--simulate", *(["--yes"] if yes else []))
    assert result.returncode == Exit.REFUSED
    line = one_error_line(result)
    assert "no saved reset" in line and "nothing was spent" in line


@pytest.mark.subprocess
def test_apply_on_an_unknown_account_is_a_usage_error(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "zed", "--simulate", "--yes")
    assert result.returncode == Exit.USAGE
    line = one_error_line(result)
    assert "'zed'" in line and "alice" in line


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("answer", "code"), [(b"y", Exit.OK), (b"yes", Exit.OK), (b"n", Exit.REFUSED), (b"", Exit.REFUSED), (None, 3)]
)
def test_apply_asks_and_only_yes_applies(homes: dict[str, str], answer: bytes | None, code: int) -> None:
    result = run_on_terminal(homes, ["apply", "alice", "--simulate"], answer)
    assert result.returncode == code, result.stderr
    assert "cannot be undone" in flat(result.stdout)
    if code == Exit.OK:
        assert "Reset applied on alice" in result.stdout
        assert result.stderr == ""
    else:
        assert "Reset applied" not in result.stdout
        assert "nothing was spent" in result.stderr
        assert "Traceback" not in result.stderr


# -- refresh and history ----------------------------------------------------------------------


@pytest.mark.subprocess
def test_refresh_shows_one_account(homes: dict[str, str]) -> None:
    result = cli(homes, "refresh", "alice", "--simulate")
    assert result.returncode == 0, result.stderr
    assert "credit-alice-1" in result.stdout and "credit-alice-2" in result.stdout
    assert "ready" in result.stdout
    raw = cli(homes, "refresh", "alice", "--simulate", "--json")
    assert raw.returncode == 0
    assert json.loads(raw.stdout)["accountId"] == "alice"


@pytest.mark.subprocess
def test_refresh_of_an_account_that_needs_sign_in_exits_3(homes: dict[str, str]) -> None:
    result = cli(homes, "refresh", "carol", "--simulate")
    assert result.returncode == Exit.REFUSED
    assert "needs sign-in" in result.stdout
    assert "codex login" in one_error_line(result)


@pytest.mark.subprocess
def test_history_of_the_simulated_world_is_seeded(homes: dict[str, str]) -> None:
    result = cli(homes, "history", "--simulate")
    assert result.returncode == 0, result.stderr
    out = flat(result.stdout)
    assert "reset applied" in out and "nothing to reset" in out
    raw = cli(homes, "history", "alice", "--simulate", "--json", "--limit", "5")
    assert raw.returncode == 0
    [entry] = json.loads(raw.stdout)
    assert (entry["accountId"], entry["status"], entry["outcome"]) == ("alice", "finished", "reset")
    assert (entry["availableBefore"], entry["availableAfter"]) == (3, 2)
    unknown = cli(homes, "history", "zed", "--simulate")
    assert unknown.returncode == Exit.USAGE
    assert "'zed'" in one_error_line(unknown)


# -- the demo ----------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("width", [80, 160])
def test_demo_runs_end_to_end_without_an_account(homes: dict[str, str], width: int) -> None:
    result = cli(homes, "demo", columns=width)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_fits(result.stdout, width)
    out = flat(result.stdout)
    steps = [out.index(f"Step {n} ·") for n in range(1, 8)]
    assert steps == sorted(steps)
    apply_part = out[steps[1] : steps[2]]
    assert "Reset applied on alice" in apply_part
    assert "Saved resets: 2 → 1" in apply_part
    # status again, through the same server: alice's state carried over
    again = out[steps[2] : steps[3]]
    assert "Alice (Pro) is now active and has 1 saved reset left" in again
    assert "100%" not in again.split("Bob (Plus)")[0]
    bob = out[steps[3] : steps[4]]
    assert "refused (exit status 3)" in bob and "no saved reset" in bob and "nothing was spent" in bob
    carol = out[steps[4] : steps[5]]
    assert "needs sign-in" in carol and "codex login" in carol
    ledger = out[steps[5] : steps[6]]
    assert "alice reset applied 2 → 1" in ledger and "bob" not in ledger  # a refusal spends nothing, records nothing
    alerts = out[steps[6] :]  # alert delivery (#23): the simulated world's test webhook got the alerts
    assert re.search(r"test webhook received [1-9]\d* alerts?, each with a valid signature", alerts), alerts
    assert "✓ critical: alice:" in alerts
    assert not (Path(homes["CODEX_LIMITS_HOME"])).exists()  # the demo never touched the operator's data dir


@pytest.mark.subprocess
def test_output_closed_early_ends_quietly(homes: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*CLI, "demo"], env=homes, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        read_line(process.stdout.fileno())
        process.stdout.close()  # like `codex-limits demo | head -1`
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    assert process.returncode == Exit.OUTPUT_CLOSED
    assert err == b""


@pytest.mark.subprocess
def test_an_invalid_accounts_file_is_one_line_and_exit_2(homes: dict[str, str]) -> None:
    data = Path(homes["CODEX_LIMITS_HOME"])
    data.mkdir()
    (data / "accounts.toml").write_text("accounts = 3\n")
    for args in (("status",), ("accounts", "list")):
        result = cli(homes, *args)
        assert result.returncode == Exit.USAGE
        assert "accounts.toml" in one_error_line(result)


# -- accounts.toml -----------------------------------------------------------------------------


@pytest.mark.subprocess
def test_accounts_add_list_remove_round_trip(homes: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "codex-work"
    first = cli(homes, "accounts", "list", "--json")
    assert first.returncode == 0, first.stderr
    assert [a["id"] for a in json.loads(first.stdout)] == ["default"]

    added = cli(homes, "accounts", "add", "work", str(work), "--label", "Work")
    assert added.returncode == 0, added.stderr
    assert "work" in added.stdout
    assert "codex login" in added.stderr  # no auth.json there yet: it says how to sign in
    toml = Path(homes["CODEX_LIMITS_HOME"]) / "accounts.toml"
    assert str(work) in toml.read_text()

    listed = cli(homes, "accounts", "list", columns=80)
    assert listed.returncode == 0
    assert "Work" in listed.stdout and "missing" in listed.stdout
    assert_fits(listed.stdout, 80)

    work.mkdir()
    (work / "auth.json").write_text("{}")
    rows = {a["id"]: a for a in json.loads(cli(homes, "accounts", "list", "--json").stdout)}
    assert rows["work"] == {"id": "work", "label": "Work", "codexHome": str(work), "authJson": True}

    duplicate = cli(homes, "accounts", "add", "work", str(work))
    assert duplicate.returncode == Exit.USAGE
    assert "already" in one_error_line(duplicate)
    bad_id = cli(homes, "accounts", "add", "no spaces", str(work))
    assert bad_id.returncode == Exit.USAGE
    one_error_line(bad_id)

    removed = cli(homes, "accounts", "remove", "work")
    assert removed.returncode == 0, removed.stderr
    assert [a["id"] for a in json.loads(cli(homes, "accounts", "list", "--json").stdout)] == ["default"]
    again = cli(homes, "accounts", "remove", "work")
    assert again.returncode == Exit.USAGE
    assert "'work'" in one_error_line(again)
    assert work.joinpath("auth.json").exists()  # removing never touches the account's files


# -- against a mock upstream: failures ---------------------------------------------------------


@pytest.mark.subprocess
def test_apply_without_yes_spends_nothing_on_a_real_pool(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"json": {"code": "reset"}})
    result = cli(signed_in, "apply", "default")
    assert result.returncode == Exit.REFUSED
    assert "--yes" in one_error_line(result)
    assert consumes(backend) == []
    after = cli(signed_in, "status", "--json")
    assert after.returncode == 0, after.stderr
    [summary] = json.loads(after.stdout)
    assert summary["resetCredits"]["availableCount"] == 1
    assert summary["pendingApply"] is None


@pytest.mark.subprocess
def test_unreadable_usage_status_exits_0_refresh_4_apply_3(signed_in: dict[str, str], backend: MockBackend) -> None:
    backend.set_routes(
        {f"GET {USAGE}": {"status": 500, "json": {"error": "boom"}}, f"GET {DETAILS}": {"json": details_body(1)}}
    )
    status = cli(signed_in, "status")
    assert status.returncode == 0, status.stderr
    assert "unavailable" in status.stdout and "500" in status.stdout

    refresh = cli(signed_in, "refresh", "default")
    assert refresh.returncode == Exit.UPSTREAM
    assert "500" in one_error_line(refresh)

    apply = cli(signed_in, "apply", "default", "--yes")
    assert apply.returncode == Exit.REFUSED
    assert "usage could not be read" in one_error_line(apply)
    assert consumes(backend) == []


@pytest.mark.subprocess
def test_failed_consume_exits_4_and_is_in_the_history(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"status": 409, "json": {"error": "refused"}})
    result = cli(signed_in, "apply", "default", "--yes")
    assert result.returncode == Exit.UPSTREAM
    line = one_error_line(result)
    assert "409" in line and "nothing was spent" in line
    assert len(consumes(backend)) == 1

    history = cli(signed_in, "history", "--json")
    assert history.returncode == 0, history.stderr
    [entry] = json.loads(history.stdout)
    assert entry["accountId"] == "default" and entry["status"] == "failed"


@pytest.mark.subprocess
def test_a_5xx_on_consume_never_says_nothing_was_spent(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"status": 502, "json": {"error": "bad gateway"}})
    result = cli(signed_in, "apply", "default", "--yes")
    assert result.returncode == Exit.UPSTREAM
    line = one_error_line(result)
    assert "502" in line and "nothing was spent" not in line and "pending" in line
    history = cli(signed_in, "history", "--json")
    [entry] = json.loads(history.stdout)
    assert entry["status"] == "pending"
    table = cli(signed_in, "history", columns=80, terminal=True)
    assert "failed" in table.stdout
    assert_fits(table.stdout, 80)
    piped = cli(signed_in, "history")  # a pipe: one plain line per attempt, the note in full
    assert "  default  outcome unknown  saved 1  key " in piped.stdout and "502 Bad Gateway" in piped.stdout


@pytest.mark.subprocess
def test_an_unknown_outcome_is_resent_with_the_same_key(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"delay": 30, "json": {"code": "reset"}})
    env = {**signed_in, "CODEX_LIMITS_CONSUME_TIMEOUT": "0.5"}
    first = cli(env, "apply", "default", "--yes")
    assert first.returncode == Exit.UPSTREAM
    assert "pending" in one_error_line(first)
    backend.release_delays()

    status = cli(env, "status", "--json")
    [summary] = json.loads(status.stdout)
    pending_key = summary["pendingApply"]["idempotencyKey"]

    limited(backend, consume={"json": {"code": "reset"}})
    second = cli(env, "apply", "default", "--yes")
    assert second.returncode == 0, second.stderr
    assert f"Re-sending that same attempt (key {pending_key})" in flat(second.stdout)
    keys = [body["redeem_request_id"] for body in consumes(backend)]
    assert keys == [pending_key, pending_key]


# -- the server failing ------------------------------------------------------------------------


@pytest.mark.subprocess
def test_a_server_that_cannot_start_is_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    from app_server.cli import connection, failures

    crash = [sys.executable, "-c", "import sys; sys.stderr.write('boom: no such thing\\n'); sys.exit(7)"]

    async def start() -> Exit:
        async with connection.connect(False, command=crash):
            raise AssertionError("initialize cannot succeed")

    assert failures.run(start, failures.Interrupt()) == Exit.SERVER
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "could not start" in err and "exit status 7" in err and "boom: no such thing" in err


@pytest.mark.subprocess
def test_a_server_that_breaks_the_protocol_is_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    from app_server.cli import connection, failures

    garbage = [sys.executable, "-c", "import sys, time; print('this is not json', flush=True); time.sleep(30)"]

    async def start() -> Exit:
        async with connection.connect(False, command=garbage):
            raise AssertionError("initialize cannot succeed")

    assert failures.run(start, failures.Interrupt()) == Exit.SERVER
    err = capsys.readouterr().err
    assert err.startswith("codex-limits: protocol failure") and err.count("\n") == 1


# -- rendering, in process ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 100, 120, 160, 200])
def test_rendered_tables_never_exceed_the_width(width: int) -> None:
    pending = {"idempotencyKey": "k-1", "creditId": None, "startedAt": NOW - 60}
    summaries = [
        summary_of("a-very-long-account-id-indeed"),
        summary_of("b", pendingApply=pending),
        summary_of(
            "c",
            status="unavailable",
            rateLimits=None,
            resetCredits=None,
            resetAction={"enabled": False, "disabledReason": "unavailable", "warning": "w"},
            error={"code": -32603, "message": "failed to fetch codex rate limits: a long explanation " * 3},
        ),
    ]
    for renderable in (
        render.status_table(summaries, now=NOW, width=width),
        render.account_detail(summaries[0], now=NOW, width=width),
        render.account_detail(summaries[2], now=NOW, width=width),
    ):
        assert_fits(rendered_text(renderable, width), width)
    text = rendered_text(render.status_table(summaries, now=NOW, width=width), width)
    assert "codex-limits apply b" in flat(text)
    if width >= render.CRAMPED:
        assert "unfinished" in text


def test_durations_and_bars_read_naturally() -> None:
    assert render.duration(8_220) == "2h 17m"
    assert render.duration(3 * 86_400 + 5 * 3_600 + 59) == "3d 5h"
    assert render.duration(45) == "45s" and render.duration(3_600) == "1h" and render.duration(21 * 86_400) == "21d"
    assert render.until(NOW + 8_220, NOW) == "in 2h 17m" and render.until(NOW - 5, NOW) == "now"
    assert render.bar(100, 10).plain == "100% ██████████"
    assert render.bar(0, 10).plain == "  0% ░░░░░░░░░░"
    assert render.bar(1, 10).plain == "  1% █░░░░░░░░░"  # any use at all shows
    limits = summary_of("x").rate_limits
    assert limits is not None
    assert render.window_name(limits.primary, "") == "5h" and render.window_name(limits.secondary, "") == "weekly"
    assert render.window_name(None, "primary") == "primary"


def test_every_outcome_and_refusal_has_words() -> None:
    from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

    assert set(render.OUTCOME_SENTENCE) == set(Outcome)
    for reason in ext.ResetDisabledReason:
        assert render.reason_words(reason, long=True) != str(reason)
        assert render.reason_words(reason, long=False) != str(reason)
