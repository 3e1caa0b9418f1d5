"""`chatgpt_base_url` in config.toml: a malformed value is refused with a reason naming the file, every read and
consume answers it, the server keeps serving, and a password inside the URL never appears anywhere."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from app_server.config import Settings
from app_server.server import initialized as server
from protocol.jsonrpc import INTERNAL_ERROR, RpcError
from tests.support.signed_home import CONSUME, READ, TIMEOUTS, write_home

pytestmark = pytest.mark.anyio

WAIT: Final = 5.0
PASSWORD: Final = "Hunter2SecretPw"

MALFORMED: Final[dict[str, tuple[Any, str]]] = {
    "space in the host": ("http://exa mple.com/backend-api", "it contains whitespace"),
    "CRLF header injection": ("http://127.0.0.1:9/\r\nx-evil: 1", "it contains a control character"),
    "NUL": ("http://127.0.0.1:9/\u0000", "it contains a control character"),
    "ftp": ("ftp://example.com/", "the scheme must be http or https"),
    "file": ("file:///etc/passwd", "the scheme must be http or https"),
    "no scheme": ("example.com/backend-api", "the scheme must be http or https"),
    "empty host": ("http://", "it has no host"),
    "empty host with a path": ("https:///backend-api", "it has no host"),
    "user and password": (f"http://user:{PASSWORD}@127.0.0.1:9/", "it must not carry credentials (user:password@)"),
    "bad host characters": ("http://bad!host/", "it has an invalid host"),
    "bad port": ("http://127.0.0.1:99999/", "it is not a valid URL (bad port or brackets)"),
    "unclosed bracket": ("http://[::1/", "it is not a valid URL (bad port or brackets)"),
    "query": ("http://127.0.0.1:9/?x=1", "it must not have a query or fragment"),
    "empty": ("", "it is empty"),
    "not a string": (42, "it must be a string"),
}


def settings(tmp_path: Path) -> Settings:
    return Settings(
        codex_home=tmp_path / "home", data_home=tmp_path / "data", refresh_url="http://127.0.0.1:9", timeouts=TIMEOUTS
    )


async def answers(tmp_path: Path) -> tuple[RpcError, RpcError]:
    async with server(settings(tmp_path)) as harness:
        with anyio.fail_after(WAIT):
            with pytest.raises(RpcError) as read:
                await harness.client.request(READ)
            with pytest.raises(RpcError) as consume:
                await harness.client.request(CONSUME, {"idempotencyKey": "k"})
    return read.value, consume.value


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_base_url_is_refused_naming_config_toml(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    value, why = MALFORMED[case]
    write_home(tmp_path / "home", f"chatgpt_base_url = {json.dumps(value)}\n")
    read, consume = await answers(tmp_path)
    detail = f"invalid chatgpt_base_url in {tmp_path / 'home' / 'config.toml'}: {why}"
    assert (read.code, read.message) == (INTERNAL_ERROR, "failed to fetch codex rate limits: " + detail)
    assert (consume.code, consume.message) == (INTERNAL_ERROR, "failed to consume rate limit reset: " + detail)
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:9", "https://chatgpt.com/backend-api/", "http://[::1]:9/x", "http://my_host.lan:9"]
)
async def test_a_wellformed_base_url_is_used(value: str, tmp_path: Path) -> None:
    """Nothing listens on these: the error is a transport one, so the URL was accepted (and nothing was refused)."""
    write_home(tmp_path / "home", f"chatgpt_base_url = {json.dumps(value)}\n")
    read, _ = await answers(tmp_path)
    assert "invalid chatgpt_base_url" not in read.message
    assert read.message.startswith("failed to fetch codex rate limits: ")


async def test_config_toml_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    write_home(tmp_path / "home", 'chatgpt_base_url = "http://127.0.0.1:9\n')
    read, consume = await answers(tmp_path)
    detail = f"cannot use {tmp_path / 'home' / 'config.toml'}: invalid TOML ("
    assert read.message.startswith("failed to fetch codex rate limits: " + detail)
    assert consume.message.startswith("failed to consume rate limit reset: " + detail)


async def test_the_password_never_appears_in_any_output_of_the_real_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_home(home, f'chatgpt_base_url = "https://codex:{PASSWORD}@127.0.0.1:9/backend-api"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY")}
    env.update(CODEX_HOME=str(home), CODEX_LIMITS_HOME=str(tmp_path / "data"), CODEX_LIMITS_LOG="debug")
    lines = [
        {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "version": "1.0"}}},
        {"id": 1, "method": READ},
        {"id": 2, "method": CONSUME, "params": {"idempotencyKey": "k"}},
        {"id": 3, "method": "accountPool/list", "params": {}},
    ]
    stdin = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with anyio.fail_after(30):
        done = await anyio.run_process([sys.executable, "-m", "app_server"], input=stdin, env=env, check=False)
    out, err = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    answers = {m["id"]: m for m in map(json.loads, out.splitlines()) if "id" in m}
    assert sorted(answers) == [0, 1, 2, 3]
    why = "it must not carry credentials (user:password@)"
    assert answers[1]["error"]["message"].endswith(why)
    assert answers[2]["error"]["message"].endswith(why)
    assert why in err, "the refusal is logged"
    assert PASSWORD not in out
    assert PASSWORD not in err
