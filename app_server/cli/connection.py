"""The connection to a server: the running service when there is one, else a spawned `codex-limits serve`.

Each command that needs the pool talks to it through one `Server` (`connect`). A spawned server's stderr
goes to a temporary file (its last line is shown only when the server fails) unless a log level was asked for.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import IO, Any, Final

import anyio
import anyio.abc

from app_server.cli.exits import CommandFailed, Exit
from app_server.cli.service_session import REQUEST_TIMEOUT, START_TIMEOUT, service_name
from app_server.config import log_level as configured_level
from app_server.env import log_level_asked
from app_server.rpc.client import Client, ServerClosed, spawn
from protocol.jsonrpc import RpcError
from protocol.methods import POOL_ACCOUNT_UPDATED, RATE_LIMITS_UPDATED

SIMULATED: Final = "<simulated>"
"""Shown instead of the simulated world's temporary directory, which is gone when the command ends."""


class Server:
    """One initialized connection to a spawned `codex-limits serve`."""

    def __init__(self, client: Client, process: anyio.abc.Process | None, log: IO[bytes] | None) -> None:
        self.client = client
        self.process = process
        self._log = log
        self.sandbox: str | None = None
        """With `--simulate`: the simulated world's temporary directory, shown as `SIMULATED`."""

    @property
    def name(self) -> str:
        """How the operator knows this server: the running service (with its pid), or the spawned one."""
        from app_server.cli.attach import ServiceProcess

        if isinstance(self.process, ServiceProcess):
            return service_name(self.process.pid)
        return "the server"

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The answer's result; no answer (timeout, connection lost) is `CommandFailed(Exit.SERVER)`."""
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                return self.scrub(await self.client.request(method, params))
        except TimeoutError:
            raise CommandFailed(
                Exit.SERVER, f"{self.name} did not answer {method} within {REQUEST_TIMEOUT:g} s"
            ) from None
        except ServerClosed:
            why = f" ({self.client.lost_reason})" if self.client.lost_reason else ""
            reason = await self.exit_reason(f"{self.name} stopped before answering {method}{why}")
            raise CommandFailed(Exit.SERVER, reason) from None
        except RpcError as exc:
            raise RpcError(exc.code, self.scrub(exc.message), self.scrub(exc.data)) from None

    def scrub(self, value: Any) -> Any:
        """`value` with the simulated world's temporary paths replaced by `SIMULATED` (they will be gone)."""
        if self.sandbox is None:
            return value
        if isinstance(value, str):
            return value.replace(self.sandbox, SIMULATED)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def abandon(self) -> None:
        """Stop a spawned server now: reads still in flight are not worth waiting for."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def exit_reason(self, what: str) -> str:
        """`what`, plus the server's exit status and the last line it logged, when there is one."""
        if self.process is None:
            return what
        with anyio.move_on_after(2):
            await self.process.wait()
        parts = [what]
        if self.process.returncode is not None:
            parts.append(f"(exit status {self.process.returncode})")
        tail = self.log_tail()
        if tail:
            parts.append(f"— {tail}")
        return " ".join(parts)

    def log_tail(self) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            self._log.seek(0)
            lines = [ln.strip() for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else ""
        return ""

    async def accounts(self, max_age: int | None = None) -> list[dict[str, Any]]:
        params = {"maxAgeSeconds": max_age} if max_age is not None else None
        result = await self.request("accountPool/list", params)
        accounts: list[dict[str, Any]] = result["accounts"]
        return accounts

    async def refresh(self, account_id: str) -> dict[str, Any]:
        summary: dict[str, Any] = await self.request("accountPool/refresh", {"accountId": account_id})
        return summary

    async def apply(self, account_id: str, key: str, credit_id: str | None) -> dict[str, Any]:
        params = {"accountId": account_id, "idempotencyKey": key, "creditId": credit_id}
        response: dict[str, Any] = await self.request("accountPool/resetCredit/apply", params)
        return response

    async def reset_credits(self, max_age: int | None = None) -> dict[str, Any]:
        """The pool-wide inventory of saved resets (`accountPool/resetCredits/list`); it never applies."""
        params = {"maxAgeSeconds": max_age} if max_age is not None else None
        result: dict[str, Any] = await self.request("accountPool/resetCredits/list", params)
        return result

    async def forecast(self) -> dict[str, Any]:
        """Every account's forecast per window (`accountPool/forecast`), from the usage history the server keeps."""
        result: dict[str, Any] = await self.request("accountPool/forecast")
        return result

    async def history(self, account_id: str | None, limit: int | None) -> list[dict[str, Any]]:
        result = await self.request("accountPool/history", {"accountId": account_id, "limit": limit})
        entries: list[dict[str, Any]] = result["entries"]
        return entries


def server_args(simulate: bool, log_level: str | None = None) -> list[str]:
    args = ["--log-level", configured_level(given=log_level)]
    return [*args, "--simulate"] if simulate else args


@asynccontextmanager
async def connect(
    simulate: bool,
    *,
    log_level: str | None = None,
    command: list[str] | None = None,
    updates: bool = False,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Server]:
    """Spawn the server, initialize, and yield it; the failure of the body is re-raised as is.

    `log_level`: the one asked for on the command line (`UI.log_level`), also the spawned server's; `env`: the
    spawned server's environment (default: ours). `updates`: keep the per-account `accountPool/accountUpdated`
    notifications (progress display).
    The running service of the data directory is used instead when there is one (not with `simulate`)."""
    failure: Exception | None = None
    if not simulate and command is None:
        from app_server.cli.attach import NotAnswering, attach

        try:
            async with attach() as attached:
                if attached is not None:
                    try:
                        server = Server(attached[0], attached[1], None)
                        await _initialize(server, updates=updates)
                        yield server
                    except Exception as exc:
                        failure = exc
        except NotAnswering as exc:
            raise CommandFailed(Exit.SERVER, str(exc)) from None
        if failure is not None:
            raise failure
        if attached is not None:
            return
    with contextlib.ExitStack() as stack:
        log: IO[bytes] | None = None
        if not (log_level or log_level_asked()):  # nobody asked for the server's log
            log = stack.enter_context(tempfile.TemporaryFile(prefix="codex-limits-server-", suffix=".log"))
        try:
            context = spawn(server_args(simulate, log_level), env=env, stderr=log, command=command)
            async with context as (client, process):
                server = Server(client, process, log)
                try:
                    home = await _initialize(server, updates=updates)
                    if simulate:
                        server.sandbox = _sandbox_root(home)
                    yield server
                except Exception as exc:
                    failure = exc
        except OSError as exc:
            raise CommandFailed(Exit.SERVER, f"could not start the server: {exc}") from None
    if failure is not None:
        raise failure


def _sandbox_root(codex_home: str | None) -> str | None:
    """The simulated world's directory: its Codex homes are `<root>/homes/<id>`."""
    if not codex_home:
        return None
    match = re.match(r"^(.*)/homes/[^/]+/?$", codex_home)
    return match.group(1) if match else None


async def _initialize(server: Server, *, updates: bool) -> str | None:
    opt_out = [RATE_LIMITS_UPDATED.name] if updates else [POOL_ACCOUNT_UPDATED.name, RATE_LIMITS_UPDATED.name]
    try:
        with anyio.fail_after(START_TIMEOUT):
            # The CLI reads answers only, except for progress: other notifications would just queue up.
            result = await server.client.initialize(opt_out=opt_out)
    except TimeoutError:
        raise CommandFailed(
            Exit.SERVER,
            await server.exit_reason(
                f"the server did not start within {START_TIMEOUT:g} s"
                if server.name == "the server"
                else f"{server.name} did not answer initialize within {START_TIMEOUT:g} s"
            ),
        ) from None
    except ServerClosed:
        what = (
            "the server could not start" if server.name == "the server" else f"{server.name} stopped before initialize"
        )
        raise CommandFailed(Exit.SERVER, await server.exit_reason(what)) from None
    except RpcError as exc:
        raise CommandFailed(Exit.SERVER, f"the server refused to initialize: {exc.message}") from None
    home = result.get("codexHome") if isinstance(result, dict) else None
    return home if isinstance(home, str) else None
