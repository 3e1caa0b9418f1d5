"""The service is private by default, and start-up refuses what it cannot use safely in one line.

`service start --listen ws://…` requires a bearer token unless the operator says `--ws-auth none`: the token
is made 0600 in the data directory, named in `service.json`, and what a client of that directory sends.
A token file that is a FIFO, a device or open to other users is refused at start-up; so is a socket
directory another user owns, by `serve` and by `service start` alike, each in one line.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import sys
from pathlib import Path

import anyio
import pytest

from app_server.rpc import wsframe
from app_server.rpc.wsclient import connect_tcp, running_client
from app_server.service.state import read_state
from app_server.service.token import TOKEN_NAME, bearer_headers
from tests.support.connection import make_settings
from tests.support.service_process import INIT_PARAMS, SERVE, WAIT, cli, service, settings_env

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]

WS = ["--listen", "ws://127.0.0.1:0"]
AUTH = ["--ws-auth", "capability-token", "--ws-token-file"]


def ws_address(listen: list[str]) -> tuple[str, int]:
    url = next(u for u in listen if u.startswith("ws://"))
    host, _, port = url.removeprefix("ws://").rpartition(":")
    return host, int(port)


def one_line(stderr: bytes) -> str:
    """The whole of `stderr`, which must be exactly one line (no traceback, no exception group)."""
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.removesuffix("\n")


def memory_capped(limit: int) -> list[str]:
    """`serve` with its address space capped at `limit` bytes: a reader that follows /dev/zero fails fast."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "from app_server.cli.main import main\n"
        "main(['serve', *sys.argv[1:]])\n"
    )
    return [sys.executable, "-c", code]


# -- token files -------------------------------------------------------------------------------------------------


async def test_a_fifo_a_device_or_a_shared_token_file_is_refused_in_one_line(tmp_path: Path) -> None:
    env = settings_env(make_settings(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # nobody ever writes it: a blocking open would wait for ever (WAIT fails the test)
    shared = tmp_path / "shared"
    shared.write_text("s3cret\n")
    shared.chmod(0o644)
    for path, reason in (
        (fifo, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (shared, f"open to other users (mode 0644); run: chmod 600 {shared}"),
    ):
        done = await cli([*WS, *AUTH, str(path)], env, memory_capped(1 << 30))
        assert done.returncode == 2, done.stderr.decode()[-2000:]
        assert (
            one_line(done.stderr) == f"codex-limits serve: --ws-token-file: cannot use the token file {path}: {reason}"
        )


# -- the socket directory ----------------------------------------------------------------------------------------


async def test_a_socket_directory_of_another_user_is_one_line_for_serve_and_service_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    theirs = tmp / f"codex-limits-{os.getuid()}"
    theirs.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(theirs, nobody, -1)
    env = {**settings_env(settings), "TMPDIR": str(tmp)}
    why = (
        f"the socket directory {theirs} belongs to another user (uid {nobody}); refusing to put a socket in it "
        "(remove it, or set TMPDIR to a directory of your own)"
    )
    served = await cli(["--listen", "unix://"], env, SERVE)
    assert served.returncode == 2
    assert one_line(served.stderr) == f"codex-limits serve: {why}"
    started = await cli(["service", "start"], env)
    assert started.returncode != 0
    assert one_line(started.stderr) == f"codex-limits service: the service exited with status 2: {why}"
    assert read_state(settings.data_home) is None


async def test_a_data_directory_that_cannot_be_used_is_one_line_for_serve_and_service_start(tmp_path: Path) -> None:
    """It used to be a PermissionError / NotADirectoryError traceback. Tests run as root, whom modes do not stop:
    the data directory lies below a regular file instead, which no user can create it in."""
    settings = make_settings(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data = blocker / "data"
    env = {**settings_env(settings), "CODEX_LIMITS_HOME": str(data)}
    why = f"cannot use the data directory {data}: Not a directory"
    served = await cli(["--listen", "unix://"], env, SERVE)
    assert served.returncode == 2
    assert one_line(served.stderr) == f"codex-limits serve: {why}"
    started = await cli(["service", "start"], env)
    assert started.returncode == 5
    assert one_line(started.stderr) == f"codex-limits service: {why}"


# -- private by default ------------------------------------------------------------------------------------------


async def test_the_services_ws_listener_requires_its_own_token_by_default(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    async with service(env, *WS) as state:
        host, port = ws_address(state.listen)
        for headers, text in ((None, b"missing websocket bearer token"), ({"Authorization": "Bearer no"}, None)):
            with anyio.fail_after(WAIT), pytest.raises(wsframe.HandshakeError) as refused:
                await connect_tcp(host, port, headers=headers)
            assert refused.value.status == 401 and (text is None or refused.value.body == text)
        token_file = settings.data_home / TOKEN_NAME
        assert state.token_file == str(token_file)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with anyio.fail_after(WAIT):
            ws = await connect_tcp(host, port, headers=bearer_headers(state.token_file))
            async with running_client(ws) as client:
                assert "userAgent" in await client.request("initialize", INIT_PARAMS)
        status = await cli(["service", "status", "--json"], env)
        assert json.loads(status.stdout)["tokenFile"] == str(token_file)
    token = token_file.read_text()
    async with service(env, *WS) as again:  # the same token on the next start
        assert token_file.read_text() == token and again.token_file == str(token_file)


async def test_ws_auth_none_opts_out_and_contradictions_are_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    for args, text in (
        ([*WS, "--ws-auth", "none", "--ws-token-sha256", "0" * 64], "--ws-auth none takes no --ws-token-file"),
        (["--ws-token-file", str(tmp_path / "t")], "need a --listen ws://IP:PORT"),
    ):
        done = await cli(["service", "start", *args], env)
        assert done.returncode == 2 and text in one_line(done.stderr), done.stderr.decode()
    async with service(env, *WS, "--ws-auth", "none") as state:
        assert state.token_file is None and not (settings.data_home / TOKEN_NAME).exists()
        with anyio.fail_after(WAIT):
            ws = await connect_tcp(*ws_address(state.listen))
            async with running_client(ws) as client:
                assert "userAgent" in await client.request("initialize", INIT_PARAMS)


async def test_a_state_file_that_is_a_fifo_or_huge_reads_as_no_service(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    settings.data_home.mkdir(mode=0o700)
    state = settings.data_home / "service.json"
    os.mkfifo(state, 0o600)  # nobody writes it: a blocking read would wait for ever (WAIT fails the test)
    status = await cli(["service", "status"], env)
    assert status.returncode == 3, status.stderr.decode()
    assert read_state(settings.data_home) is None
    state.unlink()
    state.write_bytes(b" " * (1 << 20) + b"{}")
    assert read_state(settings.data_home) is None
