"""The pool's membership: `accounts.toml` in the data directory, read and edited atomically, and the
upstream account each member's Codex home signs in to (`home_identity`, from its auth.json alone).

    include_default = true          # the $CODEX_HOME account is in the pool as `default`
    [[accounts]]
    id = "work"
    label = "Work"
    codex_home = "~/.codex-work"

A pool of one (just `default`) needs no file at all. An explicit `[[accounts]]` entry with id
`default` takes the place of the implicit one. A relative `codex_home` is relative to the
directory of accounts.toml (not to whatever directory the server was started in).
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import filelock
import tomli_w

from app_server.files import FileRefused, lock_file, read_regular, remove_stale_temp_files, write_atomic
from app_server.pool.errors import AccountsFileError

if TYPE_CHECKING:
    from app_server.store.base import AccountKey
    from app_server.upstream.auth import AuthState

__all__ = [
    "DEFAULT_ID",
    "DEFAULT_LABEL",
    "FILE_NAME",
    "AccountEntry",
    "AccountsFile",
    "AccountsFileError",
    "home_identity",
    "home_key",
]

log = logging.getLogger(__name__)

DEFAULT_ID: Final = "default"
DEFAULT_LABEL: Final = "default ($CODEX_HOME)"
FILE_NAME: Final = "accounts.toml"
LOCK_TIMEOUT: Final = 10.0
_TMP_PREFIX: Final = ".accounts."
_TMP_SUFFIX: Final = ".tmp"
_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_KEYS: Final = frozenset({"include_default", "accounts"})
_ENTRY_KEYS: Final = frozenset({"id", "label", "codex_home"})


def _unknown(table: dict[str, Any], known: frozenset[str]) -> str | None:
    """The first key not in `known` (a typo such as `codex-home` must not be silently ignored)."""
    return next((k for k in table if k not in known), None)


@dataclass(frozen=True)
class AccountEntry:
    """One pool member: its id, its label and its Codex home."""

    id: str
    label: str
    codex_home: Path


@dataclass(frozen=True)
class AccountsFile:
    """accounts.toml in the data directory: read, added to and removed from under its lock, written
    atomically; `default_home` is the $CODEX_HOME behind the implicit `default` entry."""

    path: Path
    default_home: Path

    @property
    def lock(self) -> filelock.FileLock:
        return lock_file(str(self.path) + ".lock", timeout=LOCK_TIMEOUT)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            with self.lock:
                yield
        except filelock.Timeout:
            raise AccountsFileError(
                f"{self.path} is being edited by another process (waited {LOCK_TIMEOUT:g} s); try again"
            ) from None

    def _read(self) -> dict[str, Any]:
        """The parsed file; {} when absent. Only a regular file of at most 1 MiB is read (a FIFO or
        /dev/zero put there is refused at once), and anything unusable is an AccountsFileError."""
        try:
            return tomllib.loads(read_regular(self.path).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except FileRefused as exc:
            raise AccountsFileError(f"{self.path}: {exc.reason}") from None
        except OSError as exc:
            raise AccountsFileError(f"{self.path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise AccountsFileError(f"{self.path}: not UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise AccountsFileError(f"{self.path}: {exc}") from None

    def entries(self) -> list[AccountEntry]:
        return self._parse(self._read())

    def _parse(self, data: dict[str, Any]) -> list[AccountEntry]:
        unknown = _unknown(data, _FILE_KEYS)
        if unknown is not None:
            raise AccountsFileError(f"{self.path}: unknown key {unknown!r} (known: {', '.join(sorted(_FILE_KEYS))})")
        include_default = data.get("include_default", True)
        if not isinstance(include_default, bool):
            raise AccountsFileError(f"{self.path}: include_default must be true or false")
        raw = data.get("accounts", [])
        if not isinstance(raw, list):
            raise AccountsFileError(f"{self.path}: `accounts` must be an array of tables ([[accounts]])")
        found: dict[str, AccountEntry] = {}
        for index, item in enumerate(raw):
            entry = self._entry(item, index)
            if entry.id in found:
                raise AccountsFileError(f"{self.path}: account id {entry.id!r} appears twice")
            found[entry.id] = entry
        if include_default and DEFAULT_ID not in found:
            found = {DEFAULT_ID: AccountEntry(DEFAULT_ID, DEFAULT_LABEL, self.default_home), **found}
        return list(found.values())

    def _entry(self, item: Any, index: int) -> AccountEntry:
        where = f"{self.path}: accounts[{index}]"
        if not isinstance(item, dict):
            raise AccountsFileError(f"{where} is not a table")
        unknown = _unknown(item, _ENTRY_KEYS)
        if unknown is not None:
            raise AccountsFileError(f"{where}: unknown key {unknown!r} (known: {', '.join(sorted(_ENTRY_KEYS))})")
        account_id = item.get("id")
        home = item.get("codex_home")
        if not isinstance(account_id, str) or not _ID_PATTERN.match(account_id):
            raise AccountsFileError(f"{where}: id must be 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(home, str) or not home:
            raise AccountsFileError(f"{where}: codex_home must be a path")
        label = item.get("label", account_id)
        if not isinstance(label, str):
            raise AccountsFileError(f"{where}: label must be a string")
        path = Path(home).expanduser()
        if not path.is_absolute():
            path = self.path.parent.absolute() / path
        return AccountEntry(account_id, label, path.absolute())

    def add(self, account_id: str, codex_home: Path, label: str | None = None) -> AccountEntry:
        """Append an account. The home is stored as an absolute path (a relative one is taken from the
        current directory, where the operator typed it)."""
        if not _ID_PATTERN.match(account_id):
            raise AccountsFileError(f"account id {account_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        home = Path(codex_home).expanduser().absolute()
        with self._locked():
            data = self._read()
            current = self._parse(data)  # refuse to build on a file that is already unusable
            accounts = list(data.get("accounts", []))
            if any(a.get("id") == account_id for a in accounts):
                raise AccountsFileError(f"account {account_id!r} is already in {self.path}")
            if any(e.id == account_id for e in current):  # the implicit default
                raise AccountsFileError(
                    f"account {account_id!r} is already in the pool as the $CODEX_HOME account; "
                    "remove it first to use the id for another home"
                )
            entry = {"id": account_id, "label": label or account_id, "codex_home": str(home)}
            data["accounts"] = [*accounts, entry]
            self._write(data)
        return self._entry(entry, len(accounts))

    def remove(self, account_id: str) -> None:
        """Take an account out of the pool. Removing `default` also stops including `$CODEX_HOME`, so the id
        is gone afterwards whether it was explicit or implicit."""
        with self._locked():
            data = self._read()
            if all(e.id != account_id for e in self._parse(data)):
                raise AccountsFileError(f"no account {account_id!r} in {self.path}")
            accounts = list(data.get("accounts", []))
            data["accounts"] = [a for a in accounts if not (isinstance(a, dict) and a.get("id") == account_id)]
            if account_id == DEFAULT_ID:
                data["include_default"] = False
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        """Temp file + fsync + rename: a crash leaves the old file or the new one, never half of one.

        Called under the lock, so any temp file already there was left by a writer that died."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_temp_files(self.path.parent, tmp_prefix=_TMP_PREFIX, tmp_suffix=_TMP_SUFFIX)
        write_atomic(self.path, _render(data).encode("utf-8"), tmp_prefix=_TMP_PREFIX, tmp_suffix=_TMP_SUFFIX)


def _render(data: dict[str, Any]) -> str:
    """The layout README.md shows: the top-level keys, then one `[[accounts]]` table per account."""
    accounts = data.get("accounts", [])
    top = {k: v for k, v in data.items() if k != "accounts"}
    if not accounts:
        return tomli_w.dumps({**top, "accounts": []})
    text = tomli_w.dumps(top)
    for account in accounts:
        text += ("\n" if text else "") + "[[accounts]]\n" + tomli_w.dumps(account)
    return text


def home_identity(home: Path) -> str:
    """`home_key(...).identity` of a Codex home, from its auth.json alone (no backend, no refresh)."""
    from app_server.upstream.auth import AuthStore

    def no_client() -> Any:
        raise RuntimeError("reading an identity makes no HTTP call")

    return home_key(home, AuthStore(home, refresh_url="", client=no_client).state()).identity


def home_key(home: Path, state: AuthState) -> AccountKey:
    """The upstream account a Codex home signs in to: the ChatGPT account and user named in its
    auth.json, else the home's real path."""
    from app_server.store.base import AccountKey

    creds = state.credentials
    if creds is not None and (creds.account_id or creds.user_id):
        return AccountKey(f"chatgpt:{creds.account_id or ''}:{creds.user_id or ''}", home)
    return AccountKey(f"home:{home.resolve()}", home)
