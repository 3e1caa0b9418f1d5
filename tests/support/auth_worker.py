"""Child process for the multi-process tests of `app_server.upstream.auth` (`python -m tests.support.auth_worker`).

Modes:

* `refresh HOME URL`: print `ready`, wait for `go` on stdin, run `ensure_fresh` once against URL, print the
  outcome as one JSON line.
* `zygote`: imports once, then serves stdin commands. `run HOME REWRITE STEP` forks a child that refreshes and
  rewrites HOME/auth.json in a loop, and answers `pid N`. The child pauses for good at a chosen point of its
  REWRITE-th rewrite (1-based): just before the STEP-th system call (0-based) that `write_atomic` makes, and
  says `paused STEP CALL` (the call it is about to make; `end` when the rewrite made fewer calls and returned).
  The test then kills it there, so every kill lands exactly where it means to. `reap N` waits for that child
  and answers `reaped`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx

import app_server.files
import app_server.upstream.auth
from app_server.upstream.auth import AuthStore

CHURN_URL = "http://refresh.invalid/oauth/token"


def expired_jwt(generation: int) -> str:
    """An access token that is always due for refresh; `gen` ties it to the refresh token of the same answer."""
    payload = json.dumps({"exp": 1, "gen": generation}).encode()
    return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + base64.urlsafe_b64encode(payload).decode().rstrip("=") + ".c2ln"


def _send(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _refresh_once(home: Path, url: str) -> None:
    async with httpx.AsyncClient() as client:
        store = AuthStore(home, refresh_url=url, client=lambda: client, refresh_timeout=10.0)
        store.state()
        _send("ready")
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit(f"expected 'go', got {line!r}")
        state = await store.ensure_fresh(user_agent="worker/1.0", originator="worker")
        creds = state.credentials
        _send(
            json.dumps(
                {
                    "kind": state.kind.value,
                    "access_token": creds.access_token if creds else None,
                    "refresh_failure": state.refresh_failure,
                }
            )
        )


async def _churn(home: Path) -> None:
    generation = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal generation
        generation += 1
        tokens = {
            "id_token": f"id-{generation}",
            "access_token": expired_jwt(generation),
            "refresh_token": f"refresh-{generation}",
        }
        return httpx.Response(200, json=tokens)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        store = AuthStore(home, refresh_url=CHURN_URL, client=lambda: client)
        while True:
            await store.ensure_fresh(user_agent="churn/1.0", originator="churn")


async def _warm_up() -> None:
    # Pays the lazy imports (anyio's backend, httpx's transport path) before forking, without starting
    # threads: the children then reach their first write within a few milliseconds.
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204))) as client:
        await client.send(httpx.Request("POST", CHURN_URL, content=b"{}"))
    await anyio.lowlevel.checkpoint()


# The system calls of `write_atomic` at which the child can pause (everything else passes through).
_PAUSABLE = frozenset({"open", "fchmod", "write", "fsync", "close", "replace"})


def _pause_at(rewrite: int, step: int) -> None:
    """Make this process stop for good before call `step` of its `rewrite`-th `write_atomic`."""
    real_os = os
    real_write_atomic = app_server.files.write_atomic
    state = {"rewrite": 0, "calls": 0, "split": 0}

    def pause(call: str) -> None:
        _send(f"paused {step} {call}")
        while True:
            signal.pause()

    class PausingOs:
        """`os` as `app_server.files` sees it: counts the writer's calls and stops at the chosen one."""

        def __getattr__(self, name: str) -> Any:
            real = getattr(real_os, name)
            if name not in _PAUSABLE:
                return real

            def call(*args: Any, **kwargs: Any) -> Any:
                if state["rewrite"] == rewrite:
                    if state["calls"] == step:
                        pause(name)
                    state["calls"] += 1
                if name == "write" and not state["split"] and len(args[1]) > 1:
                    # The first write stops halfway: a kill before the next one leaves a half-written temp file.
                    state["split"] = 1
                    return real(args[0], args[1][: len(args[1]) // 2])
                return real(*args, **kwargs)

            return call

    def write_atomic(*args: Any, **kwargs: Any) -> None:
        state["rewrite"] += 1
        state["split"] = 0
        real_write_atomic(*args, **kwargs)
        if state["rewrite"] == rewrite:
            pause("end")

    setattr(app_server.files, "os", PausingOs())  # noqa: B010 (a module attribute, swapped in this child only)
    setattr(app_server.upstream.auth, "write_atomic", write_atomic)  # noqa: B010


def _zygote() -> None:
    anyio.run(_warm_up)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "run":
            home, rewrite, step = arg.split(" ")
            pid = os.fork()
            if pid == 0:
                try:
                    _pause_at(int(rewrite), int(step))
                    anyio.run(_churn, Path(home))
                finally:
                    os._exit(1)
            _send(f"pid {pid}")
        elif command == "reap":
            os.waitpid(int(arg), 0)
            _send("reaped")
        else:
            raise SystemExit(f"unknown command {line!r}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["refresh"] and len(argv) == 3:
        anyio.run(_refresh_once, Path(argv[1]), argv[2])
    elif argv == ["zygote"]:
        _zygote()
    else:
        raise SystemExit(f"usage: auth_worker refresh HOME URL | zygote (got {argv})")


if __name__ == "__main__":
    main(sys.argv[1:])
