"""`--simulate` where the README promises it: `accounts list` and `proxy` work without an account."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.cli import CLI, WAIT, cli

pytestmark = pytest.mark.subprocess

SIMULATED_IDS = ["alice", "bob", "carol", "dave"]


def test_accounts_list_simulate_lists_the_made_up_pool_and_names_no_temp_dir(homes: dict[str, str]) -> None:
    listed = cli(homes, "accounts", "list", "--simulate", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == SIMULATED_IDS
    assert all(r["codexHome"] == f"<simulated>/homes/{r['id']}" and r["authJson"] for r in rows)
    table = cli(homes, "accounts", "list", "--simulate")
    assert table.returncode == 0 and "<simulated>/data/accounts.toml" in table.stdout
    assert "codex-limits-sim-" not in table.stdout + listed.stdout


def test_proxy_simulate_answers_like_a_server_on_stdio(homes: dict[str, str]) -> None:
    requests = [
        {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}},
        {"id": 1, "method": "accountPool/list", "params": {}},
    ]
    proxied = subprocess.run(
        [*CLI, "proxy", "--simulate"],
        env=homes,
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert proxied.returncode == 0, proxied.stderr
    answers = {m["id"]: m for m in map(json.loads, proxied.stdout.splitlines()) if "id" in m}
    assert answers[0]["result"]["codexHome"].endswith("/homes/alice")
    assert [a["accountId"] for a in answers[1]["result"]["accounts"]] == SIMULATED_IDS
