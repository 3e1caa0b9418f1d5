"""`accounts.toml` through the AccountsFile API: entries, add, remove, the default account, atomic writes.

(`codex-limits accounts add|remove|list` does not exist yet; these are the calls it will make.)
"""

from __future__ import annotations

import os
import stat
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from app_server.pool.accounts import DEFAULT_ID, FILE_NAME, AccountEntry, AccountsFile
from app_server.pool.errors import AccountsFileError


@pytest.fixture
def default_home(tmp_path: Path) -> Path:
    home = tmp_path / "codex-default"
    home.mkdir()
    return home


@pytest.fixture
def accounts(tmp_path: Path, default_home: Path) -> AccountsFile:
    return AccountsFile(tmp_path / "data" / FILE_NAME, default_home)


def write(accounts: AccountsFile, data: dict[str, Any] | str) -> None:
    accounts.path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        accounts.path.write_text(data, encoding="utf-8")
    else:
        accounts.path.write_bytes(tomli_w.dumps(data).encode())


def on_disk(accounts: AccountsFile) -> dict[str, Any]:
    with accounts.path.open("rb") as f:
        return tomllib.load(f)


def ids(accounts: AccountsFile) -> list[str]:
    return [entry.id for entry in accounts.entries()]


# -- reading ---------------------------------------------------------------------------------------------------


def test_no_file_is_a_pool_of_just_the_default_account(accounts: AccountsFile, default_home: Path) -> None:
    assert not accounts.path.exists()
    assert accounts.entries() == [AccountEntry(DEFAULT_ID, "default ($CODEX_HOME)", default_home)]


def test_default_comes_first_then_the_file_order(accounts: AccountsFile, tmp_path: Path) -> None:
    write(
        accounts,
        {
            "accounts": [
                {"id": "work", "label": "Work", "codex_home": str(tmp_path / "w")},
                {"id": "play", "codex_home": str(tmp_path / "p")},
            ]
        },
    )
    entries = accounts.entries()
    assert [e.id for e in entries] == [DEFAULT_ID, "work", "play"]
    assert entries[1] == AccountEntry("work", "Work", tmp_path / "w")
    assert entries[2].label == "play"  # the label defaults to the id


def test_include_default_false_leaves_the_default_out(accounts: AccountsFile, tmp_path: Path) -> None:
    write(accounts, {"include_default": False, "accounts": [{"id": "work", "codex_home": str(tmp_path / "w")}]})
    assert ids(accounts) == ["work"]
    write(accounts, {"include_default": False})
    assert accounts.entries() == []


def test_an_explicit_default_entry_replaces_the_implicit_one(accounts: AccountsFile, tmp_path: Path) -> None:
    write(accounts, {"accounts": [{"id": "x", "codex_home": "/x"}, {"id": "default", "codex_home": "/elsewhere"}]})
    entries = accounts.entries()
    assert [e.id for e in entries] == ["x", DEFAULT_ID]
    assert entries[1].codex_home == Path("/elsewhere")


def test_home_paths_expand_the_user_and_relative_ones_follow_the_file(
    accounts: AccountsFile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    write(
        accounts,
        {
            "include_default": False,
            "accounts": [
                {"id": "tilde", "codex_home": "~/.codex-work"},
                {"id": "relative", "codex_home": "homes/r"},
            ],
        },
    )
    tilde, relative = accounts.entries()
    assert tilde.codex_home == tmp_path / "user" / ".codex-work"
    # Relative to accounts.toml's directory, not to the directory the server happened to start in.
    assert relative.codex_home == accounts.path.parent / "homes" / "r"


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("include_default = 'yes'\n", "include_default must be true or false"),
        ("accounts = 'work'\n", "`accounts` must be an array of tables"),
        ("accounts = [1]\n", "accounts[0] is not a table"),
        ("[[accounts]]\nid = 'has space'\ncodex_home = '/x'\n", "accounts[0]: id must be 1-64"),
        ("[[accounts]]\ncodex_home = '/x'\n", "accounts[0]: id must be 1-64"),
        ("[[accounts]]\nid = 'a'\n", "accounts[0]: codex_home must be a path"),
        ("[[accounts]]\nid = 'a'\ncodex_home = ''\n", "accounts[0]: codex_home must be a path"),
        ("[[accounts]]\nid = 'a'\ncodex_home = '/x'\nlabel = 3\n", "accounts[0]: label must be a string"),
        (
            "[[accounts]]\nid = 'a'\ncodex_home = '/x'\n[[accounts]]\nid = 'a'\ncodex_home = '/y'\n",
            "account id 'a' appears twice",
        ),
        ("accounts = [\n", "Invalid value"),  # not TOML at all: tomllib's message, after the path
    ],
)
def test_unusable_files_are_reported_with_their_path(accounts: AccountsFile, content: str, complaint: str) -> None:
    write(accounts, content)
    with pytest.raises(AccountsFileError) as raised:
        accounts.entries()
    assert str(raised.value).startswith(f"{accounts.path}: ")
    assert complaint in str(raised.value)


# -- editing ---------------------------------------------------------------------------------------------------


def test_add_appends_an_entry_and_writes_a_private_file(accounts: AccountsFile, tmp_path: Path) -> None:
    entry = accounts.add("work", tmp_path / "w", "Work")
    assert entry == AccountEntry("work", "Work", tmp_path / "w")
    assert accounts.entries()[1:] == [entry]
    assert on_disk(accounts) == {"accounts": [{"id": "work", "label": "Work", "codex_home": str(tmp_path / "w")}]}
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(accounts.path.parent.stat().st_mode) == 0o700


def test_add_without_label_uses_the_id_and_keeps_other_settings(accounts: AccountsFile, tmp_path: Path) -> None:
    write(accounts, {"include_default": False, "accounts": [{"id": "a", "codex_home": "/a"}]})
    accounts.add("b", tmp_path / "b")
    assert on_disk(accounts) == {
        "include_default": False,
        "accounts": [{"id": "a", "codex_home": "/a"}, {"id": "b", "label": "b", "codex_home": str(tmp_path / "b")}],
    }


def test_add_stores_an_absolute_home(accounts: AccountsFile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    entry = accounts.add("rel", Path("homes/rel"))
    assert entry.codex_home == tmp_path / "homes" / "rel"
    assert on_disk(accounts)["accounts"][0]["codex_home"] == str(tmp_path / "homes" / "rel")
    # ... so another process with another working directory reads the same home back.
    monkeypatch.chdir(accounts.path.parent)
    assert accounts.entries()[1].codex_home == tmp_path / "homes" / "rel"


@pytest.mark.parametrize("bad_id", ["", "-leading-dash", ".hidden", "has space", "a/b", "é", "x" * 65])
def test_add_refuses_invalid_ids_without_touching_the_file(accounts: AccountsFile, bad_id: str) -> None:
    accounts.add("keep", Path("/k"))
    before = accounts.path.read_bytes()
    with pytest.raises(AccountsFileError, match="must be 1-64 letters"):
        accounts.add(bad_id, Path("/x"))
    assert accounts.path.read_bytes() == before


def test_longest_id_is_accepted(accounts: AccountsFile) -> None:
    accounts.add("x" * 64, Path("/x"))
    assert ids(accounts) == [DEFAULT_ID, "x" * 64]


def test_add_refuses_a_duplicate_id(accounts: AccountsFile) -> None:
    accounts.add("work", Path("/w"))
    before = accounts.path.read_bytes()
    with pytest.raises(AccountsFileError, match="'work' is already in"):
        accounts.add("work", Path("/other"))
    assert accounts.path.read_bytes() == before


def test_add_default_is_refused_while_the_codex_home_account_is_in_the_pool(accounts: AccountsFile) -> None:
    with pytest.raises(AccountsFileError, match=r"'default' is already in the pool as the \$CODEX_HOME account"):
        accounts.add(DEFAULT_ID, Path("/elsewhere"))
    assert not accounts.path.exists()
    # Once the implicit default is out of the pool, the id is free for an explicit entry.
    accounts.remove(DEFAULT_ID)
    accounts.add(DEFAULT_ID, Path("/elsewhere"))
    assert accounts.entries() == [AccountEntry(DEFAULT_ID, DEFAULT_ID, Path("/elsewhere"))]


def test_add_default_is_refused_when_an_explicit_default_exists(accounts: AccountsFile) -> None:
    write(accounts, {"include_default": False, "accounts": [{"id": "default", "codex_home": "/d"}]})
    with pytest.raises(AccountsFileError, match=r"'default' is already in /"):
        accounts.add(DEFAULT_ID, Path("/other"))


def test_add_refuses_to_build_on_a_broken_file(accounts: AccountsFile) -> None:
    write(accounts, "accounts = 'oops'\n")
    with pytest.raises(AccountsFileError, match="must be an array of tables"):
        accounts.add("work", Path("/w"))
    assert accounts.path.read_text() == "accounts = 'oops'\n"


def test_remove_takes_an_entry_out(accounts: AccountsFile) -> None:
    accounts.add("a", Path("/a"))
    accounts.add("b", Path("/b"))
    accounts.remove("a")
    assert ids(accounts) == [DEFAULT_ID, "b"]
    assert [a["id"] for a in on_disk(accounts)["accounts"]] == ["b"]


def test_remove_unknown_id_is_an_error(accounts: AccountsFile) -> None:
    accounts.add("a", Path("/a"))
    before = accounts.path.read_bytes()
    with pytest.raises(AccountsFileError, match="no account 'zzz'"):
        accounts.remove("zzz")
    assert accounts.path.read_bytes() == before


def test_remove_default_turns_include_default_off(accounts: AccountsFile) -> None:
    accounts.remove(DEFAULT_ID)
    assert on_disk(accounts) == {"include_default": False, "accounts": []}
    assert accounts.entries() == []
    with pytest.raises(AccountsFileError, match="no account 'default'"):
        accounts.remove(DEFAULT_ID)


def test_remove_an_explicit_default_does_not_bring_back_the_implicit_one(accounts: AccountsFile) -> None:
    write(accounts, {"accounts": [{"id": "default", "codex_home": "/elsewhere"}, {"id": "a", "codex_home": "/a"}]})
    accounts.remove(DEFAULT_ID)
    assert ids(accounts) == ["a"]
    assert on_disk(accounts)["include_default"] is False


def test_writes_leave_no_temp_files_and_clear_ones_left_by_a_crash(accounts: AccountsFile) -> None:
    accounts.add("a", Path("/a"))
    leftover = accounts.path.parent / ".accounts.deadbeef.tmp"
    leftover.write_text("half a file")
    accounts.add("b", Path("/b"))
    assert sorted(p.name for p in accounts.path.parent.iterdir()) == [FILE_NAME, FILE_NAME + ".lock"]


def test_a_write_that_fails_keeps_the_old_file(accounts: AccountsFile, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts.add("a", Path("/a"))
    before = accounts.path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        accounts.add("b", Path("/b"))
    monkeypatch.undo()
    assert accounts.path.read_bytes() == before
    assert [p.name for p in accounts.path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_adds_all_land(accounts: AccountsFile) -> None:
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            # A fresh AccountsFile each: as separate processes would hold their own.
            AccountsFile(accounts.path, accounts.default_home).add(f"acct-{i}", Path(f"/h/{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(ids(accounts)) == sorted([DEFAULT_ID] + [f"acct-{i}" for i in range(12)])
