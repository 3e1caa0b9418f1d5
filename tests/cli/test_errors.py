"""Errors that say what to do next, simulated worlds that never point at vanished paths, and accounts.toml checks."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from app_server.cli.exits import Exit
from tests.support.cli import CLI, DETAILS, USAGE, WAIT, cli, details_body, flat, one_error_line, sign_in
from tests.support.mock_backend import MockBackend, unused_port

SIM_PREFIX = str(Path(tempfile.gettempdir()) / "codex-limits-sim-")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args",
    [
        ["status", "--simulate"],
        ["status", "--simulate", "--json"],
        ["refresh", "carol", "--simulate"],
        ["refresh", "carol", "--simulate", "--json"],
        ["apply", "carol", "--simulate", "--yes"],
        ["demo"],
    ],
)
def test_simulated_output_never_names_the_vanished_temp_dir(homes: dict[str, str], args: list[str]) -> None:
    result = cli(homes, *args)
    assert "Traceback" not in result.stderr
    assert SIM_PREFIX not in result.stdout and SIM_PREFIX not in result.stderr
    if args[0] == "refresh" and "--json" not in args:
        assert "expired on purpose" in flat(result.stdout)


@pytest.mark.subprocess
def test_serve_simulate_does_not_warn_about_its_own_expired_account(homes: dict[str, str]) -> None:
    requests = [
        {"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}},
        {"method": "initialized"},
        {"id": 2, "method": "accountPool/list", "params": {}},
    ]
    result = subprocess.run(
        [*CLI, "serve", "--simulate"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        env=homes,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(a.get("id") == 2 and len(a["result"]["accounts"]) == 4 for a in answers)
    assert result.stderr == ""


@pytest.mark.subprocess
def test_never_signed_in_says_how_to_start(homes: dict[str, str]) -> None:
    status = cli(homes, "status", columns=200)
    assert status.returncode == 0, status.stderr
    out = flat(status.stdout)
    assert "never signed in here" in out and "codex login" in out and "codex-limits demo" in out
    refresh = cli(homes, "refresh", "default")
    assert refresh.returncode == Exit.REFUSED
    assert "never signed in here" in one_error_line(refresh)


@pytest.mark.subprocess
def test_a_rejected_sign_in_is_not_called_never_signed_in(signed_in: dict[str, str], backend: MockBackend) -> None:
    backend.set_routes(
        {
            f"GET {USAGE}": {"status": 401, "json": {"error": {"message": "token revoked"}}},
            f"GET {DETAILS}": {"json": details_body(1)},
        }
    )
    result = cli(signed_in, "refresh", "default")
    assert result.returncode == Exit.REFUSED
    line = one_error_line(result)
    assert "never signed in" not in line
    assert f"CODEX_HOME={signed_in['CODEX_HOME']} codex login" in line


@pytest.mark.subprocess
def test_an_unreachable_backend_names_its_address_and_setting(homes: dict[str, str]) -> None:
    class Nowhere:
        base_url = f"http://127.0.0.1:{unused_port()}"

    sign_in(Path(homes["CODEX_HOME"]), Nowhere())  # type: ignore[arg-type]
    result = cli(homes, "refresh", "default")
    assert result.returncode == Exit.UPSTREAM
    line = one_error_line(result)
    assert Nowhere.base_url in line and "chatgpt_base_url" in line


# -- accounts.toml ---------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_accounts_add_checks_the_home(homes: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-home"
    empty.mkdir()
    added = cli(homes, "accounts", "add", "work", str(empty))
    assert added.returncode == 0, added.stderr
    assert "warning:" in added.stderr and "has no auth.json" in added.stderr
    toml = (Path(homes["CODEX_LIMITS_HOME"]) / "accounts.toml").read_text()
    assert "[[accounts]]" in toml and 'id = "work"' in toml

    again = cli(homes, "accounts", "add", "work2", str(empty))
    assert again.returncode == Exit.USAGE
    assert "already in the pool as account 'work'" in one_error_line(again)
    default_home = cli(homes, "accounts", "add", "other", homes["CODEX_HOME"])
    assert default_home.returncode == Exit.USAGE
    assert "'default'" in one_error_line(default_home)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("includ_default = false\n", "includ_default"),
        ('[[accounts]]\nid = "w"\ncodex-home = "/x"\n', "codex-home"),
    ],
)
def test_an_unknown_key_in_accounts_toml_is_named(homes: dict[str, str], text: str, key: str) -> None:
    data = Path(homes["CODEX_LIMITS_HOME"])
    data.mkdir()
    (data / "accounts.toml").write_text(text)
    for args in (["accounts", "list"], ["status"]):
        result = cli(homes, *args)
        assert result.returncode == Exit.USAGE
        assert f"unknown key {key!r}" in one_error_line(result)


@pytest.mark.subprocess
def test_accounts_add_warns_when_two_homes_share_one_chatgpt_account(signed_in: dict[str, str], tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-default"
    copy.mkdir()
    (copy / "auth.json").write_bytes((Path(signed_in["CODEX_HOME"]) / "auth.json").read_bytes())
    added = cli(signed_in, "accounts", "add", "copy", str(copy))
    assert added.returncode == 0, added.stderr
    assert "signed in to the same ChatGPT account" in added.stderr and "'default'" in added.stderr
    other = tmp_path / "unsigned"
    other.mkdir()
    quiet = cli(signed_in, "accounts", "add", "unsigned", str(other))
    assert "same ChatGPT account" not in quiet.stderr


@pytest.fixture
def without_postgres_driver(homes: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """An install without the `postgres` extra (psycopg cannot be imported, here and in spawned servers)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('import sys\nsys.modules["psycopg"] = sys.modules["psycopg_pool"] = None\n')
    return {**homes, "PYTHONPATH": str(site), "CODEX_LIMITS_DATABASE_URL": "postgresql://op:pw-SECRET@127.0.0.1:9/db"}


@pytest.mark.subprocess
@pytest.mark.parametrize("args", [["status"], ["history"], ["history", "--usage", "default"]])
def test_a_postgres_url_without_the_extra_names_the_install_command(
    without_postgres_driver: dict[str, str], args: list[str]
) -> None:
    result = cli(without_postgres_driver, *args)
    line = one_error_line(result)
    assert "pip install 'codex-limits[postgres]'" in line and "CODEX_LIMITS_DATABASE_URL" in line
    assert "pw-SECRET" not in result.stdout + result.stderr


@pytest.mark.subprocess
def test_serve_with_a_postgres_url_without_the_extra_answers_with_the_install_command(
    without_postgres_driver: dict[str, str],
) -> None:
    requests = [
        {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}},
        {"id": 1, "method": "accountPool/history", "params": {}},
    ]
    served = subprocess.run(
        [*CLI, "serve"],
        env=without_postgres_driver,
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert served.returncode == 0 and "Traceback" not in served.stderr, served.stderr
    answer = json.loads(served.stdout.splitlines()[1])
    assert "pip install 'codex-limits[postgres]'" in answer["error"]["message"]
    assert "pw-SECRET" not in served.stdout + served.stderr


@pytest.mark.subprocess
def test_refresh_of_a_never_signed_in_account_says_how_to_sign_in_once(homes: dict[str, str]) -> None:
    refresh = cli(homes, "refresh", "default", columns=200)
    assert refresh.returncode == Exit.REFUSED
    out, err = flat(refresh.stdout), flat(refresh.stderr)
    assert (out.count("codex login"), err.count("codex login")) == (1, 1), (out, err)
    assert "again" not in out + err  # it never signed in: nothing to do "again"
    status = cli(homes, "status", columns=200)
    assert "sign in again" not in flat(status.stdout) and "sign in first" in flat(status.stdout)
