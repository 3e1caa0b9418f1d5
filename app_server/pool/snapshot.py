"""The service's side of `statusline.json`: keeps it current as fresh reads arrive (`LiveUpdates` calls it).

Rewritten when an account's summary changes, when its alert condition changes, or when its last written read
is `REWRITE_AFTER` seconds older than the newest one (so the status line can tell a fresh read from a stale
one without a write per read). The file format and the atomic write are `app_server.service.snapshot`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Final

from app_server.service import snapshot
from protocol import ext

log = logging.getLogger(__name__)

REWRITE_AFTER: Final = 60
"""Seconds a written read may lag the newest read of the same account before the file is rewritten anyway."""


class SnapshotWriter:
    """The accounts the service has read, as the status line will show them, written to `data_home`."""

    def __init__(self, data_home: Path) -> None:
        self._home = data_home
        self._accounts: dict[str, dict[str, Any]] = {}
        self._attention: dict[str, str] = {}

    def update(self, summary: ext.AccountSummary, attention: ext.AlertSeverity | None) -> None:
        """Record a fresh read of one account; writes the file when the status line would show something new.
        Never raises: a status line that cannot be written must not fail the read it follows."""
        entry = summary.model_dump(mode="json", by_alias=True)
        before = self._accounts.get(summary.account_id)
        level = attention.value if attention is not None else None
        if before is not None and level == self._attention.get(summary.account_id):
            unchanged = {**before, "refreshedAt": None} == {**entry, "refreshedAt": None}
            lag = (entry.get("refreshedAt") or 0) - (before.get("refreshedAt") or 0)
            if unchanged and lag < REWRITE_AFTER:
                return
        self._accounts[summary.account_id] = entry
        if level is None:
            self._attention.pop(summary.account_id, None)
        else:
            self._attention[summary.account_id] = level
        self._write()

    def forget(self, account_id: str) -> None:
        """An account left the pool: the status line stops showing it."""
        if self._accounts.pop(account_id, None) is not None:
            self._attention.pop(account_id, None)
            self._write()

    def document(self) -> dict[str, Any]:
        return {
            "format": snapshot.FORMAT,
            "pid": os.getpid(),
            "writtenAt": int(time.time()),
            "accounts": [self._accounts[key] for key in sorted(self._accounts)],
            "attention": dict(self._attention),
        }

    def _write(self) -> None:
        # A few kilobytes to a local file: written in place rather than through a worker thread.
        try:
            snapshot.write(self._home, self.document())
        except OSError as exc:
            log.warning("cannot write the status line snapshot in %s: %s", self._home, exc)
