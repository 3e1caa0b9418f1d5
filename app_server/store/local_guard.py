"""Per-account state that protects money on one machine: the pending marker (the local claim) and the
apply lock.

Both live beside the Codex home, in `<CODEX_HOME>/codex-limits/`, named after the upstream account's
identity (`AccountKey.digest`). Every process that can spend a credit of that account reaches the Codex
home, whatever its data directory (`CODEX_LIMITS_HOME`) or pool id for it; a ledger can be deleted
without losing the marker.

The marker is the claim: created exclusively before the consume call (written and fsynced under a
temporary name, then hard-linked into place, which fails if any marker is there: an atomic
O_CREAT|O_EXCL that never shows a half-written file), never replaced, and removed only when its own
key's outcome is known. The file lock only orders waiters: whoever loses it (a deleted lock file, a
crashed holder) can delay an apply, but the marker still refuses a second key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio

from app_server.errors import CodexLimitsError
from app_server.files import acquire_polled, lock_file, read_regular
from app_server.store.base import AccountKey, ClaimHeld, LockTimeout

log = logging.getLogger(__name__)

DIR_NAME: Final = "codex-limits"
MAX_MARKER_BYTES: Final = 64 * 1024


class GuardError(CodexLimitsError):
    """The marker directory beside the Codex home cannot be used (read-only, not a directory, ...)."""


@dataclass(frozen=True)
class Marker:
    """An attempt whose outcome is unknown, as recorded beside the Codex home."""

    idempotency_key: str
    account_id: str
    credit_id: str | None
    started_at: int


def guard_dir(home: Path) -> Path:
    return home / DIR_NAME


def _marker_path(account: AccountKey) -> Path:
    return guard_dir(account.home) / f"pending-{account.digest}.json"


def lock_path(account: AccountKey) -> Path:
    """The file lock that one process at a time holds while applying on this upstream account."""
    return guard_dir(account.home) / f"apply-{account.digest}.lock"


def _ensure_dir(account: AccountKey) -> Path:
    directory = guard_dir(account.home)
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise GuardError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not directory.is_dir() or directory.is_symlink():
        raise GuardError(f"{directory} is not a directory")
    return directory


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim_marker(account: AccountKey, marker: Marker) -> Marker:
    """Create the account's marker for `marker.idempotency_key`, exclusively and durably; the marker that
    stands afterwards. The same key may re-take its own marker (it is left as it is); another key's
    marker (or a damaged one) raises `ClaimHeld` and is never replaced."""
    directory = _ensure_dir(account)
    data = json.dumps(
        {
            "identity": account.identity,
            "idempotencyKey": marker.idempotency_key,
            "accountId": marker.account_id,
            "creditId": marker.credit_id,
            "startedAt": marker.started_at,
        },
        ensure_ascii=False,
    ).encode("utf-8")
    path = _marker_path(account)
    tmp = directory / f".pending.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic and exclusive: fails with EEXIST whatever stands there
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(directory)
    except OSError as exc:
        raise GuardError(f"cannot write {path}: {exc.strerror or exc}") from None
    if created:
        return marker
    standing = read_marker(account)
    if standing is None:  # settled between our link and our read: try once more
        return claim_marker(account, marker)
    if standing.idempotency_key != marker.idempotency_key:
        raise ClaimHeld(marker.idempotency_key, standing.idempotency_key, standing.account_id)
    return standing


def read_marker(account: AccountKey) -> Marker | None:
    """The pending attempt recorded for this account, if any. A marker that cannot be read or parsed
    still counts as pending (money first), under a key that tells the operator to look."""
    path = _marker_path(account)
    try:
        raw = read_regular(path, MAX_MARKER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return Marker(f"<unreadable marker {path}>", "", None, 0)
    try:
        data = json.loads(raw)
        return Marker(
            idempotency_key=str(data["idempotencyKey"]),
            account_id=str(data["accountId"]),
            credit_id=None if data.get("creditId") is None else str(data["creditId"]),
            started_at=int(data["startedAt"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("the pending marker %s is damaged; treating the account as pending", path)
        return Marker(f"<damaged marker {path}>", "", None, 0)


def clear_marker(account: AccountKey, idempotency_key: str) -> None:
    """Remove the marker if it is the one of `idempotency_key` (a newer attempt's marker stays)."""
    marker = read_marker(account)
    if marker is None or marker.idempotency_key != idempotency_key:
        return
    path = _marker_path(account)
    try:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


class LocalLocks:
    """The apply lock of each upstream account on this machine: an in-process FIFO lock (so tasks of
    one process queue fairly) around a file lock beside the Codex home (so processes exclude each
    other; the kernel releases it when a holder dies)."""

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}

    @asynccontextmanager
    async def hold(self, account: AccountKey, *, wait: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(account.identity, anyio.Lock())
        try:
            lock.acquire_nowait()  # a free lock is taken even with wait=0 (fail_after(0) cancels at once)
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(wait):
                    await lock.acquire()
            except TimeoutError:
                raise LockTimeout(wait) from None
        try:
            _ensure_dir(account)
            file_lock = lock_file(lock_path(account))
            try:
                acquired = await acquire_polled(file_lock, wait)
            except OSError as exc:
                raise GuardError(f"cannot lock {lock_path(account)}: {exc.strerror or exc}") from None
            if not acquired:
                raise LockTimeout(wait)
            try:
                yield
            finally:
                file_lock.release()
        finally:
            lock.release()
