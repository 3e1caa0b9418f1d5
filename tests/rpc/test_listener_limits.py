"""Malformed or hostile input at the listeners' edge gets a 4xx and one clear line, never a 500 or a traceback:
headers sent twice on the upgrade, a socket directory another user owns or opened, a port already taken,
and an accept() that fails for want of file descriptors. The server runs in the test's event loop."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pwd
import socket
import tempfile
from pathlib import Path

import anyio
import pytest

from app_server.config import Settings
from app_server.handlers import routes
from app_server.rpc.listeners import (
    ListenError,
    PacedSocket,
    bind_tcp,
    bind_unix,
    parse_listen,
    private_dir,
    serve_listeners,
    unbind_unix,
)
from app_server.rpc.websocket import DUPLICATE_AUTHORIZATION, TokenCheck
from app_server.world import World
from tests.support.connection import make_settings
from tests.support.listener import WAIT, get, listening, raw_http

pytestmark = pytest.mark.anyio

WS = ["ws://127.0.0.1:0"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`$TMPDIR` (where the private socket directory lives) moved into the test's own directory."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


async def refusal(settings: Settings, url: str) -> ListenError:
    """What `serve_listeners` raises, itself (not wrapped in a group), when it cannot listen on `url`."""
    services = World(settings)
    try:
        with anyio.fail_after(WAIT), pytest.raises(ListenError) as refused:
            await serve_listeners(
                [parse_listen(url, default_unix=settings.data_home / "service.sock")],
                routes(),
                services,
                broadcaster=services.broadcaster,
                stop=anyio.Event(),
            )
    finally:
        await services.aclose()
    return refused.value


def twice(request: bytes, header: str) -> bytes:
    """`request` with `header` sent a second time."""
    return request.replace(b"\r\n\r\n", f"\r\n{header}\r\n\r\n".encode(), 1)


# -- headers sent twice ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_token", [True, False])
async def test_two_authorization_headers_are_a_400_not_a_500(
    settings: Settings, caplog: pytest.LogCaptureFixture, with_token: bool
) -> None:
    token = TokenCheck(hashlib.sha256(b"s3cret").digest()) if with_token else None
    caplog.set_level(logging.INFO)
    async with listening(settings, WS, token=token) as served:
        right = get("/", {"Authorization": "Bearer s3cret"}, upgrade=True)
        for request in (twice(right, "Authorization: Bearer s3cret"), twice(right, "Authorization: Bearer other")):
            async with await anyio.connect_tcp(*served.ws()) as stream:
                answer = await raw_http(stream, request)
            assert (answer.status, answer.body) == (400, DUPLICATE_AUTHORIZATION.encode())
            assert answer.headers["content-type"].startswith("text/plain")
        async with await anyio.connect_tcp(*served.ws()) as stream:  # and a duplicate Upgrade is no 500 either
            answer = await raw_http(stream, twice(right, "Upgrade: websocket"))
        assert answer.status < 500
        ws = await served.connect("ws", {"Authorization": "Bearer s3cret"})  # still serving
        await ws.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


# -- the socket directory -------------------------------------------------------------------------------------


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


async def test_a_socket_directory_another_user_owns_is_refused_in_one_line(
    settings: Settings, own_tmpdir: Path
) -> None:
    theirs = own_tmpdir / f"codex-limits-{os.getuid()}"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, nobody(), -1)
    with pytest.raises(ListenError) as refused:
        private_dir()
    assert str(refused.value) == (
        f"the socket directory {theirs} belongs to another user (uid {nobody()}); refusing to put a socket in it "
        "(remove it, or set TMPDIR to a directory of your own)"
    )
    assert "belongs to another user" in str(await refusal(settings, f"unix://{settings.data_home / 'x.sock'}"))


async def test_a_path_in_a_directory_another_user_owns_or_may_write_is_refused(tmp_path: Path) -> None:
    theirs, shared, sticky = tmp_path / "theirs", tmp_path / "shared", tmp_path / "sticky"
    for directory in (theirs, shared, sticky):
        directory.mkdir()
    os.chown(theirs, nobody(), -1)
    shared.chmod(0o777)
    sticky.chmod(0o1777)  # as /tmp: others may write, but not replace what is ours
    with pytest.raises(
        ListenError, match=rf"^the socket directory {theirs} belongs to another user \(uid {nobody()}\)"
    ):
        bind_unix(theirs / "s.sock")
    with pytest.raises(ListenError, match=rf"^the socket directory {shared} is writable by other users \(mode 0777\)"):
        bind_unix(shared / "s.sock")
    assert not (theirs / "s.sock").exists() and not (shared / "s.sock").exists()
    sock = bind_unix(sticky / "s.sock")
    sock.close()
    unbind_unix(sticky / "s.sock")


async def test_a_socket_directory_open_to_other_users_is_refused(own_tmpdir: Path) -> None:
    ours = own_tmpdir / f"codex-limits-{os.getuid()}"
    ours.mkdir(mode=0o700)
    ours.chmod(0o755)
    with pytest.raises(ListenError, match=rf"is open to other users \(mode 0755\).*run: chmod 700 {ours}"):
        private_dir()
    ours.chmod(0o700)
    assert private_dir() == ours


async def test_a_port_already_taken_is_one_line(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = await refusal(settings, f"ws://127.0.0.1:{port}")
    assert str(refused) == f"cannot listen on ws://127.0.0.1:{port}: Address already in use"


# -- accept() out of file descriptors -------------------------------------------------------------------------


def test_a_failing_accept_fails_once_then_reports_an_empty_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio calls accept() up to `backlog` times per readiness; only the first sees EMFILE (and logs it)."""
    calls: list[str] = []

    def out_of_descriptors(self: socket.socket) -> tuple[socket.socket, object]:
        calls.append("accept")
        raise OSError(errno.EMFILE, "Too many open files")

    with bind_tcp("127.0.0.1", 0) as sock:
        assert isinstance(sock, PacedSocket)
        monkeypatch.setattr(socket.socket, "accept", out_of_descriptors)
        with pytest.raises(OSError, match="Too many open files") as first:
            sock.accept()
        assert first.value.errno == errno.EMFILE
        for _ in range(100):
            with pytest.raises(BlockingIOError):
                sock.accept()
        assert calls == ["accept"]
