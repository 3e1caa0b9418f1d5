"""The operator commands' way to the running service: a connected `Client` on its socket, if one answers.

`connection.connect` tries `attach` first and spawns `codex-limits serve` only when it yields None:
no service for this data directory, one acting on another `$CODEX_HOME` (a simulated service, started with
`service start --simulate`, is this data directory's whatever `$CODEX_HOME` says), or one that refuses the
connection or the upgrade. A service that holds the data directory but does not answer the handshake
within `wsframe.HANDSHAKE_TIMEOUT` (stopped with SIGSTOP, wedged) raises `NotAnswering` (one line for
the operator; exit 5): a spawned server next to it would share its ledger and its pending applies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.abc

from app_server.cli.service_session import not_answering
from app_server.rpc.client import Client
from app_server.rpc.wsclient import connect_unix, running_client
from app_server.rpc.wsframe import HandshakeError, HandshakeTimeout, ProtocolError
from app_server.service.state import codex_home, data_home, running


class NotAnswering(Exception):
    """The service holds the data directory but did not answer the handshake in time; the text says so."""


class ServiceProcess(anyio.abc.Process):
    """The service as the operator commands see it: a process that is not ours to wait for or stop."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    async def wait(self) -> int:
        return 0  # never ours to reap: a lost connection is reported without an exit status

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass

    def send_signal(self, signal: int) -> None:
        pass

    async def aclose(self) -> None:
        pass

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return None

    @property
    def stdin(self) -> None:
        return None

    @property
    def stdout(self) -> None:
        return None

    @property
    def stderr(self) -> None:
        return None


@asynccontextmanager
async def attach() -> AsyncIterator[tuple[Client, anyio.abc.Process] | None]:
    """A running client on this data directory's service (not yet initialized), or None."""
    state = running(data_home())
    if state is None or not (state.simulated or state.codex_home == str(codex_home())):
        yield None
        return
    try:
        ws = await connect_unix(state.socket)
    except HandshakeTimeout as exc:
        raise NotAnswering(not_answering(state.pid, exc)) from None
    except (OSError, HandshakeError, ProtocolError):
        yield None
        return
    async with running_client(ws) as client:
        yield client, ServiceProcess(state.pid)
