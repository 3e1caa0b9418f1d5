"""Running the installed `codex-limits` as a user does: in a subprocess, on a pipe or a pseudo-terminal.

Also the mock-upstream bodies and signed-in Codex homes the CLI tests point it at.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from app_server.sim.upstream import make_unsigned_jwt
from protocol import ext
from tests.support.mock_backend import MockBackend

WAIT = 60.0
"""Bound on every subprocess call (generous: a CI machine may be slow; nothing here waits on purpose)."""

_SCRIPT = Path(sys.executable).with_name("codex-limits")
CLI: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app_server.cli.main"]

USAGE = "/api/codex/usage"
DETAILS = "/api/codex/rate-limit-reset-credits"
CONSUME = "/api/codex/rate-limit-reset-credits/consume"
NOW = int(time.time())


def base_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Codex and codex-limits homes are fresh temp dirs."""
    codex_home = tmp_path / "codex"
    data_home = tmp_path / "data"
    codex_home.mkdir()
    drop = (
        "CODEX_LIMITS_LOG",
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "NO_COLOR",
        "_ARGCOMPLETE",
        "TTY_COMPATIBLE",
        "FORCE_COLOR",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(CODEX_HOME=str(codex_home), CODEX_LIMITS_HOME=str(data_home), COLUMNS="80", TERM="dumb")
    return env


def cli(
    env: dict[str, str], *args: str, columns: int | None = None, terminal: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `codex-limits ARGS` with stdin from /dev/null (not a terminal).

    `terminal`: stdout counts as a (dumb, colourless) terminal of `columns` columns (`TTY_COMPATIBLE=1`), so the
    views drawn for a terminal are printed; otherwise stdout is a pipe and gets the plain views."""
    run_env = dict(env) if columns is None else {**env, "COLUMNS": str(columns)}
    if terminal:
        run_env["TTY_COMPATIBLE"] = "1"
    return subprocess.run(
        [*CLI, *args],
        env=run_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure is exactly one `codex-limits: ...` line on stderr, no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("codex-limits: "), lines
    assert "Traceback" not in result.stderr
    return lines[0]


def flat(text: str) -> str:
    """`text` with every run of whitespace as one space: phrases survive the table's line folding."""
    return " ".join(text.split())


def assert_fits(text: str, width: int) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, f"lines wider than {width}: {too_long}"


def read_line(fd: int) -> bytes:
    """One line from a pipe, waiting at most WAIT seconds for it."""
    data = b""
    deadline = time.monotonic() + WAIT
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no complete line within {WAIT} s: {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1)
            assert chunk, f"stream ended after {data!r}"
            data += chunk
    return data


@dataclass
class Interactive:
    returncode: int
    stdout: str
    stderr: str


def run_on_terminal(
    env: dict[str, str], args: list[str], answer: bytes | None, *, wait_for: bytes = b"[y/N]"
) -> Interactive:
    """Run with stdin on a pseudo-terminal; wait for `wait_for` on stdout, then type `answer` (None: Ctrl-C)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([*CLI, *args], env=env, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + WAIT
        while wait_for not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {wait_for!r} within {WAIT} s: {seen!r}"
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                assert chunk, f"output ended before {wait_for!r}: {seen!r}"
                seen += chunk
        if answer is None:
            process.send_signal(signal.SIGINT)
        else:
            os.write(master, answer + b"\n")
        rest, err = process.communicate(timeout=WAIT)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    return Interactive(process.returncode, (seen + rest).decode(), err.decode())


def run_with_terminal_stdout(env: dict[str, str], args: list[str]) -> tuple[int, bytes]:
    """Run with stdout on a pseudo-terminal (so progress shows); return the exit status and all it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen([*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"still running after {WAIT} s: {seen!r}"
            ready, _, _ = select.select([master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        process.wait(timeout=WAIT)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
    return process.returncode, seen


# -- a mock upstream -----------------------------------------------------------------------------


def usage_body(primary: int, credits: int, *, secondary: int = 40) -> dict[str, Any]:
    reached = primary >= 100
    return {
        "plan_type": "pro",
        "user_id": "user-1",
        "account_id": "acct-1",
        "email": "op@example.com",
        "rate_limit": {
            "allowed": not reached,
            "limit_reached": reached,
            "primary_window": {
                "used_percent": primary,
                "limit_window_seconds": 18_000,
                "reset_after_seconds": 3_600,
                "reset_at": NOW + 3_600,
            },
            "secondary_window": {
                "used_percent": secondary,
                "limit_window_seconds": 604_800,
                "reset_after_seconds": 86_400,
                "reset_at": NOW + 86_400,
            },
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        "rate_limit_reset_credits": {"available_count": credits},
        "rate_limit_reached_type": {"type": "rate_limit_reached"} if reached else None,
    }


def details_body(credits: int, *, expires: list[int | None] | None = None) -> dict[str, Any]:
    """`credits` available rows `credit-0`...; `expires` gives each one's expiry (Unix seconds or None)."""
    stamps = expires if expires is not None else [None] * credits
    rows = [
        {
            "id": f"credit-{i}",
            "reset_type": "codex_rate_limits",
            "status": "available",
            "granted_at": "2026-01-01T00:00:00Z",
            "expires_at": None if stamps[i] is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamps[i])),
            "title": "Full reset",
            "description": "Resets your limits.",
        }
        for i in range(credits)
    ]
    return {"available_count": credits, "total_earned_count": credits, "credits": rows}


def sign_in(home: Path, backend: MockBackend) -> None:
    """Write a ChatGPT sign-in to `home` whose backend is `backend`."""
    home.mkdir(parents=True, exist_ok=True)
    claims = {"chatgpt_account_id": "acct-1", "chatgpt_plan_type": "pro", "chatgpt_user_id": "user-1"}
    auth = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": make_unsigned_jwt({"email": "op@example.com", "https://api.openai.com/auth": claims}),
            "access_token": make_unsigned_jwt({"exp": NOW + 10 * 86_400, "https://api.openai.com/auth": claims}),
            "refresh_token": "refresh-1",
            "account_id": "acct-1",
        },
        "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
    }
    path = home / "auth.json"
    path.write_text(json.dumps(auth, indent=2))
    path.chmod(0o600)
    (home / "config.toml").write_text(f'chatgpt_base_url = "{backend.base_url}"\n')


def limited(
    backend: MockBackend, *, credits: int = 1, consume: Any = None, primary: int = 100, secondary: int = 40
) -> None:
    routes: dict[str, Any] = {
        f"GET {USAGE}": {"json": usage_body(primary, credits, secondary=secondary)},
        f"GET {DETAILS}": {"json": details_body(credits)},
    }
    if consume is not None:
        routes[f"POST {CONSUME}"] = consume
    backend.set_routes(routes)


def consumes(backend: MockBackend) -> list[dict[str, Any]]:
    return [r.json() for r in backend.recorded() if r.method == "POST" and r.path == CONSUME]


def summary_of(account_id: str, **changes: Any) -> ext.AccountSummary:
    """A rate-limited pool account with three saved resets; `changes` overrides wire members."""
    base: dict[str, Any] = {
        "accountId": account_id,
        "label": f"A label that is rather long for {account_id}",
        "codexHome": f"/home/user/.codex-{account_id}",
        "email": f"{account_id}@example.com",
        "planType": "pro",
        "status": "rateLimited",
        "rateLimits": {
            "primary": {"usedPercent": 100, "windowDurationMins": 300, "resetsAt": NOW + 8_220},
            "secondary": {"usedPercent": 7, "windowDurationMins": 10_080, "resetsAt": NOW + 400_000},
        },
        "resetCredits": {"availableCount": 3, "credits": None, "nearestExpiresAt": NOW + 700_000},
        "resetAction": {"enabled": True, "disabledReason": None, "warning": "w"},
        "refreshedAt": NOW,
    }
    base.update(changes)
    return ext.AccountSummary.model_validate(base)


def rendered_text(renderable: Any, width: int) -> str:
    """What a terminal of `width` columns shows for `renderable`, as plain text."""
    console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    return console.export_text()
