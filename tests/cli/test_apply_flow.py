"""`apply` never nudges toward a wasted reset, names the credit it spends, and says only what it knows.

Through the real command (subprocess or pseudo-terminal) against `--simulate` or a mock upstream;
answers our own pool does not give yet come from `tests/support/fake_pool_server.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from app_server.cli.apply import apply_on
from app_server.cli.connection import connect
from app_server.cli.exits import Exit
from app_server.cli.failures import Interrupt, run
from app_server.cli.terminal import UI
from tests.support.cli import (
    CONSUME,
    DETAILS,
    NOW,
    USAGE,
    cli,
    consumes,
    details_body,
    flat,
    limited,
    run_on_terminal,
    usage_body,
)
from tests.support.mock_backend import MockBackend

FAKE = Path(__file__).parents[1] / "support" / "fake_pool_server.py"


@pytest.mark.subprocess
def test_status_tells_ready_from_available(homes: dict[str, str]) -> None:
    table = cli(homes, "status", "--simulate", columns=100, terminal=True)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line[:1].isupper() and "(" in line}
    assert "ready" in rows["Alice"] and "available" not in rows["Alice"]
    assert "available" in rows["Dave"] and "ready" not in rows["Dave"]
    raw = cli(homes, "status", "--simulate", "--json")
    readiness = {a["accountId"]: a["resetAction"]["readiness"] for a in json.loads(raw.stdout)}
    assert readiness == {"alice": "exhausted", "bob": None, "carol": None, "dave": "available"}


@pytest.mark.subprocess
def test_the_prompt_names_the_credit_and_warns_when_nothing_is_used_up(homes: dict[str, str]) -> None:
    result = run_on_terminal(homes, ["apply", "dave", "--simulate"], b"n")
    assert result.returncode == Exit.REFUSED
    before_question = flat(result.stdout.split("[y/N]")[0])
    assert "Spends: credit-dave-1 (Full reset, expires in 12d" in before_question
    assert "Nothing on dave is used up (5h 30 %, weekly 10 %)" in before_question
    assert "Reset applied" not in result.stdout


@pytest.mark.subprocess
def test_the_prompt_on_an_exhausted_account_does_not_warn(homes: dict[str, str]) -> None:
    result = run_on_terminal(homes, ["apply", "alice", "--simulate", "--credit", "credit-alice-2"], b"n")
    assert result.returncode == Exit.REFUSED
    before_question = flat(result.stdout.split("[y/N]")[0])
    assert "Spends: credit-alice-2 (Full reset, expires in 21d" in before_question
    assert "is used up" not in before_question.split("Spends:")[1]


@pytest.mark.subprocess
def test_apply_spends_the_credit_it_named(signed_in: dict[str, str], backend: MockBackend) -> None:
    soon, later = NOW + 3 * 86_400, NOW + 30 * 86_400
    backend.set_routes(
        {
            f"GET {USAGE}": {"json": usage_body(100, 2)},
            f"GET {DETAILS}": {"json": details_body(2, expires=[later, soon])},
            f"POST {CONSUME}": {"json": {"code": "reset"}},
        }
    )
    result = cli(signed_in, "apply", "default", "--yes")
    assert "Spends: credit-1 (Full reset, expires in 3d" in flat(result.stdout)
    [body] = consumes(backend)
    assert body["credit_id"] == "credit-1"  # the one expiring soonest, as the prompt said


@pytest.mark.subprocess
@pytest.mark.parametrize("as_json", [False, True])
def test_an_unknown_credit_id_gets_its_own_refusal(homes: dict[str, str], as_json: bool) -> None:
    result = cli(homes, "apply", "alice", "--simulate", "--yes", "--credit", "bogus", *(["--json"] if as_json else []))
    assert result.returncode == Exit.REFUSED
    assert "Traceback" not in result.stderr
    line = result.stderr.splitlines()[-1]  # with --json the human story goes to stderr too
    assert "no saved reset 'bogus'" in line and "credit-alice-1, credit-alice-2" in line
    assert "no saved reset available" not in line
    if as_json:
        error = json.loads(result.stdout)["error"]
        assert error["data"]["disabledReason"] == "unknownCredit"
        assert error["data"]["availableCreditIds"] == ["credit-alice-1", "credit-alice-2"]


@pytest.mark.subprocess
def test_apply_json_refusal_is_a_json_error_on_stdout(homes: dict[str, str]) -> None:
    result = cli(homes, "apply", "bob", "--simulate", "--json")
    assert result.returncode == Exit.REFUSED
    error = json.loads(result.stdout)["error"]
    assert error["data"] == {"accountId": "bob", "disabledReason": "noCredit"}
    assert "nothing was spent" in result.stderr.splitlines()[-1]


@pytest.mark.subprocess
def test_an_after_read_still_exhausted_is_not_called_a_reset(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"json": {"code": "reset"}})  # usage keeps answering 100 %
    result = cli(signed_in, "apply", "default", "--yes")
    assert result.returncode == 0, result.stderr
    out = flat(result.stdout)
    assert "the usage windows were reset" not in out
    assert "still shows 5h 100 %, weekly 40 %" in out


@pytest.mark.subprocess
def test_nothing_to_reset_says_nothing_was_spent_and_exits_3(signed_in: dict[str, str], backend: MockBackend) -> None:
    limited(backend, consume={"json": {"code": "nothing_to_reset"}}, primary=10, secondary=5)
    result = cli(signed_in, "apply", "default", "--yes")
    assert result.returncode == Exit.REFUSED
    assert "Nothing to reset on default" in flat(result.stdout) and "nothing was spent" in flat(result.stdout)


# -- against a scripted server: answers our pool does not give (yet) -----------------------------------


def _summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "accountId": "work",
        "label": "Work",
        "codexHome": "/home/op/.codex-work",
        "email": None,
        "planType": "pro",
        "status": "rateLimited",
        "rateLimits": {"primary": {"usedPercent": 100, "windowDurationMins": 300, "resetsAt": NOW + 3_600}},
        "resetCredits": {"availableCount": 2, "credits": None, "nearestExpiresAt": None},
        "resetAction": {"enabled": True, "disabledReason": None, "warning": "Cannot be undone.", "readiness": None},
        "pendingApply": None,
        "refreshedAt": NOW,
        "error": None,
    }
    base.update(changes)
    return base


def _scripted(tmp_path: Path, capsys: pytest.CaptureFixture[str], script: dict[str, Any], credit: str | None) -> int:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    ui = UI()

    async def go() -> Exit:
        async with connect(False, command=[sys.executable, str(FAKE), str(path)]) as server:
            return await apply_on(server, ui, Interrupt(), account="work", credit_id=credit, yes=True)

    return run(go, Interrupt(), ui)


@pytest.mark.subprocess
def test_a_server_side_unknown_credit_lists_the_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refusal = {
        "code": -32600,
        "message": "cannot apply a saved reset on account 'work': it has no saved reset 'bogus'",
        "data": {"accountId": "work", "disabledReason": "unknownCredit", "availableCreditIds": ["c-1", "c-2"]},
    }
    script = {"accountPool/refresh": {"result": _summary()}, "accountPool/resetCredit/apply": {"error": refusal}}
    assert _scripted(tmp_path, capsys, script, "bogus") == Exit.REFUSED
    err = capsys.readouterr().err
    assert "(available: c-1, c-2)" in err and "nothing was spent" in err


@pytest.mark.subprocess
def test_a_sent_readiness_wins_over_the_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    action = {"enabled": True, "disabledReason": None, "warning": "w", "readiness": "available"}
    script = {"accountPool/refresh": {"result": _summary(resetAction=action)}}
    _scripted(tmp_path, capsys, script, None)
    assert "Nothing on work is used up (5h 100 %)" in flat(capsys.readouterr().out)


@pytest.mark.subprocess
def test_an_ambiguous_failure_never_claims_nothing_was_spent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The consume's fate is unknown and the ledger shows no record of the attempt: unknown, not "nothing spent".
    script = {
        "accountPool/refresh": {"result": _summary()},
        "accountPool/resetCredit/apply": {"error": {"code": -32603, "message": "consume timed out"}},
        "accountPool/history": {"result": {"entries": []}},
    }
    assert _scripted(tmp_path, capsys, script, None) == Exit.UPSTREAM
    err = capsys.readouterr().err
    assert "nothing was spent" not in err
    assert "outcome is unknown" in err and "codex-limits apply work" in err
