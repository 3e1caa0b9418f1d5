"""Configuration is read in one place: `app_server/env.py` reads the environment, `config.py` builds on it."""

from __future__ import annotations

import re
from pathlib import Path

import app_server
from app_server import env
from app_server.config import Settings, data_home

PACKAGE = Path(app_server.__file__).parent
READS = re.compile(r"os\.environ|getenv|putenv|unsetenv")


def test_nothing_but_env_py_reads_or_writes_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if READS.search(path.read_text(encoding="utf-8")) and path != PACKAGE / "env.py"
    )
    assert readers == []


def test_the_data_home_has_one_rule_for_every_reader() -> None:
    given = {"CODEX_LIMITS_HOME": "~/somewhere/../data"}
    assert str(data_home(given)) == env.data_home(given) == str(Settings.from_env(given).data_home)
    assert env.data_home({}) == str(Path.home() / ".codex-limits")


def test_a_child_gets_our_environment_with_its_overrides_and_ours_is_untouched() -> None:
    base = {"A": "1", "B": "2"}
    child = env.child({"B": "3"}, base)
    assert child == {"A": "1", "B": "3"} and base == {"A": "1", "B": "2"}
