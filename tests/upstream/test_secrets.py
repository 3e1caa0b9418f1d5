"""No access, refresh or id token ever shows: not on stdout, not on stderr, not in a log record, not in an error.

Distinctive token strings go through every flow that touches them: reads and consumes (they are sent as
`authorization`), refreshes that succeed (new tokens come back) or fail in each way, and backend failures of
each kind. Then the server's whole stdout, every log record at DEBUG (ours, httpx's, httpcore's), every error
message and the reprs of the objects holding credentials are scanned. The mock's recordings prove the tokens
were really used, so the scan is not vacuous.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest

from app_server.config import Settings, Timeouts
from app_server.rpc.memory import Harness
from app_server.server import serve_in_memory
from app_server.upstream.auth import format_last_refresh
from app_server.world import World
from protocol.jsonrpc import RpcError
from tests.support import replay as rs
from tests.support.mock_backend import MockBackend, unused_port

pytestmark = pytest.mark.anyio

# Deadlines a loaded machine meets for answers that come at once (a success must never time out: the
# test checks which token was sent), yet short enough that the calls made to hang time out quickly.
TIMEOUTS: Final = Timeouts(usage=1.5, details=1.5, consume=1.5, refresh=5.0, connect=5.0)
# Only the refresh that is made to hang gets a short deadline of its own.
REFRESH_TIMEOUT_WHEN_HANGING: Final = 0.3
WAIT: Final = 30.0  # a hang guard, never reached by a working server
NEVER: Final = 60.0


def jwt(claims: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.c2lnLVNFQ1JFVA"


ACCESS: Final = "at-SECRET-access-6f1c93b2"
REFRESH: Final = "rt-SECRET-refresh-2a7d58e0"
ID: Final = jwt({"email": "u@example.com", "https://api.openai.com/auth": {"chatgpt_user_id": "user-7"}})
NEW_ACCESS: Final = "at-SECRET-newaccess-94be07aa"
NEW_REFRESH: Final = "rt-SECRET-newrefresh-3c5f1d6e"
NEW_ID: Final = jwt({"email": "u@example.com", "nonce": "n-81d2"})
SECRETS: Final = (ACCESS, REFRESH, ID, NEW_ACCESS, NEW_REFRESH, NEW_ID, "SECRET")

USAGE_ROUTE: Final = "GET /api/codex/usage"
DETAILS_ROUTE: Final = "GET /api/codex/rate-limit-reset-credits"
CONSUME_ROUTE: Final = "POST /api/codex/rate-limit-reset-credits/consume"
REFRESH_ROUTE: Final = "POST /oauth/token"
USAGE: Final = {"plan_type": "plus", "rate_limit_reset_credits": {"available_count": 1}}

REFRESH_ANSWERS: Final[dict[str, dict[str, Any] | None]] = {
    "success": {"json": {"access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH, "id_token": NEW_ID}},
    "401 echoing the token": {"status": 401, "json": {"error": {"code": "refresh_token_expired", "token": REFRESH}}},
    "400 invalid_grant": {"status": 400, "json": {"error": "invalid_grant", "error_description": f"bad {REFRESH}"}},
    "500 echoing the token": {"status": 500, "body": f"could not refresh {REFRESH}"},
    "invalid JSON": {"status": 200, "body": f"{{not json {REFRESH}"},
    "non-string token": {"json": {"access_token": {"value": NEW_ACCESS}}},
    "timeout": {"json": {"access_token": NEW_ACCESS}, "delay": NEVER},
    "connection refused": None,
}

# Backend failures, each answered to a read and to a consume (bodies carry no token: they are shown verbatim).
FAILURES: Final = [
    {"status": 500, "body": "upstream exploded", "headers": {"content-type": "text/plain"}},
    {"status": 401, "json": {"detail": "Unauthorized"}},
    {"status": 200, "body": "not json", "headers": {"content-type": "application/json"}},
    {"action": "close"},
    {"json": {"code": "reset"}, "delay": NEVER},
]


def write_home(home: Path, base_url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'chatgpt_base_url = "{base_url}"\n', encoding="utf-8")
    nine_days_ago = format_last_refresh(time.time() - 9 * 86400)  # an opaque token that old is refreshed
    auth = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": ID, "access_token": ACCESS, "refresh_token": REFRESH, "account_id": "acc-1"},
        "last_refresh": nine_days_ago,
    }
    (home / "auth.json").write_text(json.dumps(auth, indent=2), encoding="utf-8")


@pytest.fixture
def backend() -> Iterator[MockBackend]:
    with MockBackend() as mock:
        yield mock


def base_routes(refresh: dict[str, Any] | None) -> dict[str, Any]:
    routes: dict[str, Any] = {
        USAGE_ROUTE: {"json": USAGE},
        DETAILS_ROUTE: {"json": {"available_count": 1, "credits": []}},
        CONSUME_ROUTE: {"json": {"code": "reset"}},
    }
    if refresh is not None:
        routes[REFRESH_ROUTE] = refresh
    return routes


async def run_flows(harness: Harness[World], backend: MockBackend) -> list[str]:
    """Reads, consumes and every backend failure; returns every error message the client got."""
    errors: list[str] = []

    async def call(method: str, params: Any) -> None:
        with anyio.fail_after(WAIT):
            try:
                await harness.client.request(method, params)
            except RpcError as error:
                errors.append(error.message)

    await call("account/rateLimits/read", None)
    await call("account/rateLimitResetCredit/consume", {"idempotencyKey": "k-ok"})
    for number, failure in enumerate(FAILURES):
        backend.update_routes({USAGE_ROUTE: failure, DETAILS_ROUTE: failure, CONSUME_ROUTE: failure})
        await call("account/rateLimits/read", None)
        await call("account/rateLimitResetCredit/consume", {"idempotencyKey": f"k-{number}"})
    return errors


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.mark.parametrize("refresh", list(REFRESH_ANSWERS))
async def test_no_token_anywhere(
    refresh: str, backend: MockBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = REFRESH_ANSWERS[refresh]
    backend.set_routes(base_routes(answer))
    home = tmp_path / "home"
    write_home(home, backend.base_url)
    refresh_url = f"{backend.base_url}/oauth/token" if answer is not None else f"http://127.0.0.1:{unused_port()}/t"
    timeouts = TIMEOUTS
    if answer is not None and "delay" in answer:
        timeouts = dataclasses.replace(TIMEOUTS, refresh=REFRESH_TIMEOUT_WHEN_HANGING)
    settings = Settings(codex_home=home, data_home=tmp_path / "data", refresh_url=refresh_url, timeouts=timeouts)
    services = World(settings)
    async with serve_in_memory(services) as harness:
        with anyio.fail_after(WAIT):
            await harness.initialize(name="probe", version="1.0")
        errors = await run_flows(harness, backend)
        account = services.default_account()
        reprs = [repr(account.auth), str(account.auth), repr(account.auth.state()), repr(account.backend.endpoints)]
        stdout = harness.output().decode("utf-8")

    # The tokens were really in play: sent to the backend (and to the token endpoint), and failures happened.
    sent = [r.header("authorization") for r in backend.recorded() if r.path.startswith("/api/")]
    expected_bearer = f"Bearer {NEW_ACCESS}" if refresh == "success" else f"Bearer {ACCESS}"
    assert sent and set(sent) == {expected_bearer}
    if answer is not None:
        assert any(REFRESH.encode() in r.body for r in backend.recorded() if r.path == "/oauth/token")
    assert len(errors) == 2 * len(FAILURES)
    assert caplog.records

    shown = {
        "stdout": stdout,
        "errors": "\n".join(errors),
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "reprs": "\n".join(reprs),
    }
    assert {where: leaks(text) for where, text in shown.items() if leaks(text)} == {}


@pytest.mark.subprocess
async def test_no_token_on_a_real_process_stdout_or_stderr(backend: MockBackend, tmp_path: Path) -> None:
    """The same on a real `python -m app_server --log-level DEBUG`: a refresh, a read, a consume, every failure."""
    backend.set_routes(base_routes(REFRESH_ANSWERS["success"]))
    home = tmp_path / "home"
    write_home(home, backend.base_url)
    env = {
        **rs.subprocess_env_base(),
        "CODEX_HOME": str(home),
        "CODEX_LIMITS_HOME": str(tmp_path / "data"),
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"{backend.base_url}/oauth/token",
        "CODEX_LIMITS_USAGE_TIMEOUT": str(TIMEOUTS.usage),
        "CODEX_LIMITS_DETAILS_TIMEOUT": str(TIMEOUTS.details),
        "CODEX_LIMITS_CONSUME_TIMEOUT": str(TIMEOUTS.consume),
        "CODEX_LIMITS_REFRESH_TIMEOUT": str(TIMEOUTS.refresh),
    }
    lines = [
        {"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "probe", "version": "1"}}},
        {"id": 1, "method": "account/rateLimits/read"},
        {"id": 2, "method": "account/rateLimitResetCredit/consume", "params": {"idempotencyKey": "k"}},
    ]
    async with anyio.create_task_group() as tg:
        process = await anyio.open_process(
            [sys.executable, "-m", "app_server", "--log-level", "DEBUG"], env=env, cwd=rs.REPO_ROOT, stderr=-1
        )
        async with process:
            proc = rs.SubprocessServer(process, tg)
            for message in lines:
                await proc.send(json.dumps(message).encode() + b"\n")
            with anyio.fail_after(WAIT):
                await proc.output.wait_for(3)
            next_id = 3
            for failure in FAILURES:
                backend.update_routes({USAGE_ROUTE: failure, DETAILS_ROUTE: failure, CONSUME_ROUTE: failure})
                for message in (
                    {"id": next_id, "method": "account/rateLimits/read"},
                    {
                        "id": next_id + 1,
                        "method": "account/rateLimitResetCredit/consume",
                        "params": {"idempotencyKey": "k"},
                    },
                ):
                    await proc.send(json.dumps(message).encode() + b"\n")
                next_id += 2
                with anyio.fail_after(WAIT):
                    await proc.output.wait_for(next_id)
            await proc.close_input()
            with anyio.fail_after(WAIT):
                code = await proc.wait_exit()
        tg.cancel_scope.cancel()

    assert code == 0
    answers = [json.loads(line) for line in proc.output.lines]
    assert sum("error" in a for a in answers) == 2 * len(FAILURES)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "DEBUG" in stderr and "refresh" in stderr  # the log level took effect and the refresh was logged
    assert any(r.header("authorization") == f"Bearer {NEW_ACCESS}" for r in backend.recorded())
    assert leaks("\n".join(proc.output.lines)) == []
    assert leaks(stderr) == []
