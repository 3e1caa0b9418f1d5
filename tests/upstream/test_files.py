"""Files we read are regular and bounded, files and locks we create are 0600 under any umask (app_server.files).

Each of auth.json, config.toml and accounts.toml is replaced by a FIFO and by a symlink to /dev/zero: the
request that reads it gets a clear answer within 2 s and the server answers the next request. A FIFO that
blocked the event loop would be unblocked by `Fifo` after 3 s (so old code fails the test, not hangs it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest

from app_server.config import Settings
from app_server.files import FileRefused, lock_file, read_private, read_regular, write_atomic
from app_server.pool.accounts import AccountsFile
from app_server.server import initialized as server
from app_server.store.sqlite import SqliteStore as Ledger
from app_server.upstream.auth import AuthStore
from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RpcError
from tests.support.signed_home import AUTH, READ, TIMEOUTS

pytestmark = pytest.mark.anyio

LIST: Final = "accountPool/list"


class Fifo:
    """A FIFO at `path`; a helper thread opens its writing end after 3 s (and then keeps doing so), which ends
    any blocking open or read of it. Stopped by `close`."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._unblock, daemon=True)
        self._thread.start()

    def _unblock(self) -> None:
        if self._stop.wait(3.0):
            return
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):  # ENXIO: no reader at this moment
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def fifos() -> Iterator[list[Fifo]]:
    made: list[Fifo] = []
    yield made
    for fifo in made:
        fifo.close()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the helper --------------------------------------------------------------------------------------------------


def test_read_regular_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    assert read_regular(path, limit=1000) == b"x" * 1000
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent")


def test_read_regular_refuses_a_fifo_a_device_and_a_large_file(tmp_path: Path, fifos: list[Fifo]) -> None:
    fifos.append(Fifo(tmp_path / "fifo"))
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 1001)
    refused = {"fifo": "not a regular file", "zero": "not a regular file", "big": "larger than 1000 bytes"}
    for name, reason in refused.items():
        with pytest.raises(FileRefused) as caught:
            read_regular(tmp_path / name, limit=1000)
        assert caught.value.reason == reason


def test_read_private_refuses_what_read_regular_refuses_and_a_file_others_can_open(
    tmp_path: Path, fifos: list[Fifo]
) -> None:
    fifos.append(Fifo(tmp_path / "fifo"))
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 4097)
    (tmp_path / "big").chmod(0o600)
    for name, bits in (("shared", 0o644), ("group", 0o640), ("writable", 0o602)):
        (tmp_path / name).write_text("s3cret\n")
        (tmp_path / name).chmod(bits)
    refused = {
        "fifo": "not a regular file",
        "zero": "not a regular file",
        "big": "larger than 4096 bytes",
        "shared": f"open to other users (mode 0644); run: chmod 600 {tmp_path / 'shared'}",
        "group": f"open to other users (mode 0640); run: chmod 600 {tmp_path / 'group'}",
        "writable": f"open to other users (mode 0602); run: chmod 600 {tmp_path / 'writable'}",
    }
    for name, reason in refused.items():
        with pytest.raises(FileRefused) as caught:
            read_private(tmp_path / name)
        assert caught.value.reason == reason
    (tmp_path / "shared").chmod(0o600)
    assert read_private(tmp_path / "shared") == b"s3cret\n"
    (tmp_path / "link").symlink_to(tmp_path / "shared")
    assert read_private(tmp_path / "link") == b"s3cret\n"
    with pytest.raises(FileRefused) as caught:
        read_private(tmp_path / "link", follow_symlinks=False)
    assert caught.value.reason == "a symbolic link"


def test_files_and_locks_we_create_are_0600_under_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    write_atomic(tmp_path / "data", b"{}", tmp_prefix=".data.")
    lock = lock_file(tmp_path / "data.lock")
    with lock:
        pass
    assert (mode(tmp_path / "data"), mode(tmp_path / "data.lock")) == (0o600, 0o600)


# -- the three lock files, through their owners ------------------------------------------------------------------


async def test_the_accounts_lock_is_0600_under_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    accounts = AccountsFile(tmp_path / "data" / "accounts.toml", tmp_path / "codex")
    accounts.add("work", tmp_path / "work")
    assert mode(tmp_path / "data" / "accounts.toml.lock") == 0o600
    assert mode(tmp_path / "data" / "accounts.toml") == 0o600


async def test_the_ledger_setup_lock_is_0600_under_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        assert await ledger.get("k") is None
    finally:
        ledger.close()
    assert mode(tmp_path / "ledger.sqlite3.setup.lock") == 0o600


async def test_the_auth_refresh_lock_is_0600_under_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    expired = "e30." + base64.urlsafe_b64encode(json.dumps({"exp": 1}).encode()).decode().rstrip("=") + ".c2ln"
    auth = {**AUTH, "tokens": {**AUTH["tokens"], "access_token": expired}}  # type: ignore[dict-item]
    (tmp_path / "auth.json").write_text(json.dumps(auth), encoding="utf-8")
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    store = AuthStore(tmp_path, refresh_url="http://auth.test/oauth/token", client=lambda: client, refresh_timeout=2)
    with anyio.fail_after(5):
        await store.ensure_fresh(user_agent="probe", originator="probe")
    await client.aclose()
    assert mode(tmp_path / "auth.json.lock") == 0o600


# -- FIFO and /dev/zero as each file, through the server -------------------------------------------------------------


def settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('chatgpt_base_url = "http://127.0.0.1:9"\n', encoding="utf-8")
    (home / "auth.json").write_text(json.dumps(AUTH), encoding="utf-8")
    return Settings(codex_home=home, data_home=tmp_path / "data", refresh_url="http://127.0.0.1:9", timeouts=TIMEOUTS)


def plant(path: Path, kind: str, fifos: list[Fifo]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if kind == "fifo":
        fifos.append(Fifo(path))
    else:
        path.symlink_to("/dev/zero")


async def two_answers(settings: Settings, method: str, params: Any = None) -> tuple[RpcError, RpcError]:
    async with server(settings) as harness:
        found: list[RpcError] = []
        for _ in range(2):
            with anyio.fail_after(2), pytest.raises(RpcError) as caught:
                await harness.client.request(method, params)
            found.append(caught.value)
    return found[0], found[1]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_auth_json_that_is_not_a_regular_file(
    kind: str, tmp_path: Path, fifos: list[Fifo], caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path)
    plant(s.codex_home / "auth.json", kind, fifos)
    first, second = await two_answers(s, READ)
    expected = (INVALID_REQUEST, "codex account authentication required to read rate limits")
    assert (first.code, first.message) == (second.code, second.message) == expected
    assert f"cannot read {s.codex_home / 'auth.json'}: not a regular file" in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_config_toml_that_is_not_a_regular_file(kind: str, tmp_path: Path, fifos: list[Fifo]) -> None:
    s = settings(tmp_path)
    plant(s.codex_home / "config.toml", kind, fifos)
    first, second = await two_answers(s, READ)
    message = f"failed to fetch codex rate limits: cannot use {s.codex_home / 'config.toml'}: not a regular file"
    assert (first.code, first.message) == (second.code, second.message) == (INTERNAL_ERROR, message)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_accounts_toml_that_is_not_a_regular_file(kind: str, tmp_path: Path, fifos: list[Fifo]) -> None:
    s = settings(tmp_path)
    plant(s.data_home / "accounts.toml", kind, fifos)
    first, second = await two_answers(s, LIST, {})
    message = f"{s.data_home / 'accounts.toml'}: not a regular file"
    assert (first.code, first.message) == (second.code, second.message) == (INVALID_REQUEST, message)


async def test_a_config_toml_over_1_mib_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    (s.codex_home / "config.toml").write_text("# padding\n" * 120_000, encoding="utf-8")
    first, _ = await two_answers(s, READ)
    assert first.message == (
        f"failed to fetch codex rate limits: cannot use {s.codex_home / 'config.toml'}: larger than 1048576 bytes"
    )
