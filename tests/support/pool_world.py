"""The world the pool tests run in: a gated simulated upstream, Codex homes, accounts.toml, settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app_server.config import Settings, Timeouts
from app_server.pool.accounts import DEFAULT_ID, FILE_NAME, AccountsFile
from app_server.sim.upstream import RecordedRequest, SimulatedUpstream, make_unsigned_jwt
from tests.support.mock_backend import MockBackend
from tests.support.store_backends import SQLITE, StoreBackend

GATE_LIMIT = 30.0  # a held consume never waits longer than this, even if a test forgets to release it
CONSUME_SUFFIX = "/rate-limit-reset-credits/consume"


# -- the upstream ----------------------------------------------------------------------------------------------


class GatedUpstream(SimulatedUpstream):
    """The simulator with a gate on its consume route and a record of every request as it arrives.

    `hold(after=False)` makes consumes wait before the simulator sees them (nothing is spent until
    `release()`); `hold(after=True)` lets the simulator spend the credit and then withholds the answer,
    as when a connection dies after upstream acted on the request.
    """

    def __init__(self) -> None:
        super().__init__()
        self._gate = threading.Event()
        self._gate.set()
        self._hold_after = False
        self._arrivals_lock = threading.Lock()
        self.arrivals: list[RecordedRequest] = []
        self.consume_arrived = threading.Event()

    def hold(self, *, after: bool) -> None:
        self._hold_after = after
        self.consume_arrived.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def handle_request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._arrivals_lock:
            self.arrivals.append(RecordedRequest(method, path, {k.lower(): v for k, v in headers.items()}, body))
        if not path.endswith(CONSUME_SUFFIX):
            return super().handle_request(method, path, headers, body)
        hold_after = self._hold_after
        self.consume_arrived.set()
        if not hold_after:
            self._gate.wait(GATE_LIMIT)
        answer = super().handle_request(method, path, headers, body)
        if hold_after:
            self._gate.wait(GATE_LIMIT)
        return answer

    def consumes(self) -> list[RecordedRequest]:
        """Consume requests the simulator has processed (a held one counts once it is let through)."""
        return [r for r in self.recorded_requests() if r.path.endswith(CONSUME_SUFFIX)]

    def consume_arrivals(self) -> list[RecordedRequest]:
        """Consume requests that reached the simulator, processed or still held at the gate."""
        with self._arrivals_lock:
            return [r for r in self.arrivals if r.path.endswith(CONSUME_SUFFIX)]

    def consume_keys(self) -> list[str]:
        return [json.loads(r.body)["redeem_request_id"] for r in self.consumes()]

    def keep_credits(self, key: str, count: int) -> None:
        account = self.accounts[key]
        account.credits = account.credits[:count]


# -- the world: codex homes, accounts.toml, settings ------------------------------------------------------------


@dataclass
class World:
    upstream: GatedUpstream
    root: Path
    homes: dict[str, Path]
    data_home: Path
    codex_home: Path
    backend: StoreBackend = SQLITE

    @property
    def accounts(self) -> AccountsFile:
        return AccountsFile(self.data_home / FILE_NAME, self.codex_home)

    def settings(self, **timeouts: Any) -> Settings:
        return Settings(
            codex_home=self.codex_home,
            data_home=self.data_home,
            refresh_url=self.upstream.refresh_url,
            timeouts=Timeouts(**timeouts),
            env=self.backend.env(),
        )

    def ledger_rows(self) -> list[dict[str, Any]]:
        """The apply ledger of whichever store the world uses."""
        return self.backend.ledger_rows(self.data_home)

    def another_machine(self, name: str, account_id: str, *, copy_home: bool = True) -> Settings:
        """Another service: its own data directory under `root/name`, whose pool has one account,
        `account_id`, signed in to alice's upstream account; with `copy_home` through its own copy of alice's
        Codex home (same auth.json: nothing shared on disk), else through alice's home itself. The world's
        store backend (one PostgreSQL database when it has one; else a ledger of its own)."""
        machine = self.root / name
        home = self.homes["alice"]
        if copy_home:
            home = machine / "codex-alice"
            home.mkdir(parents=True, mode=0o700)
            for file in ("auth.json", "config.toml"):
                (home / file).write_bytes((self.homes["alice"] / file).read_bytes())
        settings = Settings(
            codex_home=machine / "no-default",
            data_home=machine / "data",
            refresh_url=self.upstream.refresh_url,
            env=self.backend.env(),
        )
        accounts = AccountsFile(settings.data_home / FILE_NAME, settings.codex_home)
        accounts.remove(DEFAULT_ID)
        accounts.add(account_id, home, f"Alice on {name}")
        return settings

    def mock_account(self, name: str, backend: MockBackend, *, api_key: bool = False) -> Path:
        """A Codex home whose upstream is `backend`, added to the pool as `name`."""
        home = self.root / "homes" / name
        home.mkdir(mode=0o700, parents=True)
        (home / "config.toml").write_text(f'chatgpt_base_url = "{backend.base_url}"\n', encoding="utf-8")
        write_auth(home, api_key=api_key)
        self.accounts.add(name, home, name.title())
        return home


def write_auth(home: Path, *, api_key: bool = False) -> None:
    if api_key:
        auth: dict[str, Any] = {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test-not-a-real-key"}
    else:
        access = make_unsigned_jwt({"exp": int(time.time()) + 10 * 86_400, "sub": home.name})
        auth = {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": make_unsigned_jwt({"email": f"{home.name}@example.com"}),
                "access_token": access,
                "refresh_token": f"refresh-{home.name}",
                "account_id": f"acct-{home.name}",
            },
            "last_refresh": "2099-01-01T00:00:00Z",
        }
    (home / "auth.json").write_text(json.dumps(auth, indent=2), encoding="utf-8")
    (home / "auth.json").chmod(0o600)


def make_world(upstream: GatedUpstream, root: Path, backend: StoreBackend = SQLITE) -> World:
    homes = upstream.write_codex_homes(root / "homes")
    world = World(upstream, root, homes, root / "data", root / "no-default-home", backend)
    world.accounts.remove(DEFAULT_ID)  # the pool is exactly the simulated accounts
    for key, home in homes.items():
        world.accounts.add(key, home, upstream.accounts[key].label)
    return world
