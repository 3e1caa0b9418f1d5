"""`--simulate`: a complete throwaway world (simulated upstream, four Codex homes, a pool, a seeded ledger).

Everything lives in a temporary directory that is removed on exit; nothing touches the
operator's real `~/.codex` or `~/.codex-limits`, and no request leaves 127.0.0.1.

The accounts: alice (windows used up, two saved resets: applying helps), bob (no saved reset),
carol (her saved sign-in expired on purpose), dave (a saved reset but nothing used up: applying
would spend it early). The ledger starts with a short history, so `history --simulate` has
something to show. A test webhook (`sim.alert_sink`) is the world's one alert sink: what it accepted
is in `<root>/alert-sink.jsonl` (`ALERT_SINK_FILE`), which `demo` shows.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import tomli_w

from app_server.config import LiveSettings, Settings, Timeouts
from app_server.pool.accounts import FILE_NAME
from app_server.sim.alert_sink import SimAlertSink
from app_server.sim.upstream import SimulatedUpstream

FIRST_ACCOUNT = "alice"
ALERT_SINK_FILE: Final = "alert-sink.jsonl"
_HOUR: Final = 3_600
_DAY: Final = 86_400


class _ExpectedInSimulation(logging.Filter):
    """carol's refresh token is dead by design: her failed refresh is news at INFO, not a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "refresh_token_expired" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


@contextmanager
def simulated_world(
    timeouts: Timeouts | None = None, *, seed_history: bool = True, live: LiveSettings | None = None
) -> Iterator[tuple[SimulatedUpstream, Settings]]:
    """The simulated upstream and settings pointing at a throwaway pool; `seed_history` puts a few past
    applies in the ledger (what `history --simulate` shows). `live` (default: from the environment, as a
    real server reads it) sets the background refresh and alerts: `watch --simulate` needs them."""
    quiet = _ExpectedInSimulation()
    auth_log = logging.getLogger("app_server.upstream.auth")
    auth_log.addFilter(quiet)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="codex-limits-sim-") as tmp,
            SimulatedUpstream() as upstream,
            SimAlertSink(secrets.token_hex(16).encode(), record_to=Path(tmp) / ALERT_SINK_FILE) as sink,
        ):
            root = Path(tmp)
            sink.start()
            upstream.add_account(
                "dave", "Dave (Pro)", "pro", primary=(30, 4 * _HOUR), secondary=(10, 6 * _DAY), credit_days=[12]
            )
            homes = upstream.write_codex_homes(root / "homes")
            data_home = root / "data"
            data_home.mkdir(mode=0o700)
            accounts = [
                {"id": key, "label": upstream.accounts[key].label, "codex_home": str(home)}
                for key, home in homes.items()
            ]
            with (data_home / FILE_NAME).open("wb") as f:
                tomli_w.dump({"include_default": False, "accounts": accounts}, f)
            _configure_alert_sink(data_home, sink)
            if seed_history:
                _seed_ledger(data_home, homes)
            yield (
                upstream,
                Settings(
                    codex_home=homes[FIRST_ACCOUNT],
                    data_home=data_home,
                    refresh_url=upstream.refresh_url,
                    timeouts=timeouts or Timeouts(),
                    live=LiveSettings.from_env() if live is None else live,
                ),
            )
    finally:
        auth_log.removeFilter(quiet)


def _configure_alert_sink(data_home: Path, sink: SimAlertSink) -> None:
    """The world's config.toml names the test webhook; its secret is in a private file, as advised."""
    from app_server.config import DATA_CONFIG_NAME

    secret_file = data_home / "alert-webhook.secret"
    secret_file.touch(mode=0o600)
    secret_file.write_bytes(sink.secret)
    webhook = {"name": "simulated test sink", "url": sink.url, "secret_file": str(secret_file)}
    with (data_home / DATA_CONFIG_NAME).open("wb") as f:
        tomli_w.dump({"alerts": {"webhook": [webhook]}}, f)


def _seed_ledger(data_home: Path, homes: dict[str, Path]) -> None:
    """A few finished attempts from the past days (none pending, so nothing blocks an apply)."""
    import concurrent.futures
    import time

    import anyio

    from app_server.store.base import AccountKey
    from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
    from app_server.store.sqlite import SqliteStore
    from protocol import ext
    from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome

    now = int(time.time())

    def summary(account_id: str, label: str, available: int) -> ext.AccountSummary:
        return ext.AccountSummary(
            account_id=account_id,
            label=label,
            codex_home="",
            status=ext.AccountStatus.ACTIVE,
            reset_credits=ext.ResetCreditsOverview(available_count=available),
            reset_action=ext.ResetAction(enabled=available > 0, warning=ext.APPLY_WARNING),
        )

    seeds = [
        ("seed-alice-reset", "alice", "Alice (Pro)", "credit-alice-0", Outcome.RESET, 3 * _DAY + 2 * _HOUR, 3, 2),
        ("seed-dave-early", "dave", "Dave (Pro)", "credit-dave-1", Outcome.NOTHING_TO_RESET, _DAY + 5 * _HOUR, 1, 1),
    ]

    async def seed() -> None:
        ledger = SqliteStore(data_home / LEDGER_FILE)
        try:
            for key, account_id, label, credit, outcome, age, before, after in seeds:
                started = now - age
                home = homes[account_id]
                await ledger.start(key, AccountKey(f"home:{home}", home), account_id, credit, started, before)
                response = ext.AccountPoolApplyResponse(
                    outcome=outcome,
                    before=summary(account_id, label, before),
                    after=summary(account_id, label, after),
                    applied_at=started + 2,
                )
                await ledger.finish(key, response, after)
        finally:
            ledger.close()

    # In a thread of its own: the world may be made from inside a running event loop (the dashboard's tests).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, seed).result()
