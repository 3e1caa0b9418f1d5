"""README.md and docs/ say what the tool does: checked against the tool itself, not against a copy."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from app_server.cli.exits import EXIT_MEANING, Exit
from app_server.dashboard.errors import ERROR_CODES
from tests.support.cli import CLI, WAIT, cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(text: str, marker: str) -> str:
    """The indented block that follows the paragraph ending in `marker`, dedented."""
    rest = text[text.index(marker) + len(marker) :]
    lines: list[str] = []
    for line in rest.split("\n")[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip("\n") + "\n"


@pytest.mark.subprocess
def test_accounts_add_writes_the_layout_the_readme_shows(homes: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "work-home"
    home.mkdir()
    added = cli(homes, "accounts", "add", "work", str(home), "--label", "Work")
    assert added.returncode == 0, added.stderr
    written = (Path(homes["CODEX_LIMITS_HOME"]) / "accounts.toml").read_text(encoding="utf-8")
    shown = block_after(README, "leaves the `$CODEX_HOME` account out of the pool):")
    assert written.replace(str(home), "/home/me/.codex-work") == shown


def test_the_exit_table_says_watch_exits_0_on_ctrl_c() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| 130 |"))
    assert "`watch`" in row and "`watch`" in EXIT_MEANING[Exit.INTERRUPTED]


def test_every_dashboard_error_code_is_in_the_docs_table() -> None:
    rows = [line for line in (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8").splitlines() if "|" in line]
    for code, (status, _) in ERROR_CODES.items():
        row = next((r for r in rows if f"`{code}`" in r), None)
        assert row is not None, f"docs/dashboard.md's error table lacks {code}"
        assert str(status) in row, f"{code} is {status}: {row}"


@pytest.mark.subprocess
def test_the_readme_json_rpc_session_shows_the_notifications_that_arrive(homes: dict[str, str]) -> None:
    requests = block_after(README, "(one message per line; answers abridged):")
    answers = block_after(README, "a message without `id` is a notification):")
    served = subprocess.run(
        [*CLI, "serve", "--simulate"],
        env=homes,
        input=requests,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert served.returncode == 0, served.stderr
    messages = [json.loads(line) for line in served.stdout.splitlines()]
    assert {m["id"] for m in messages if "id" in m} == {int(i) for i in re.findall(r'"id":(\d+)', requests)}
    notified = {m["method"] for m in messages if "method" in m}
    assert notified, "the session sends notifications"
    for method in notified:
        assert f'"method":"{method}"' in answers, f"the README's answers do not show {method}"
