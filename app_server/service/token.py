"""The capability token of a WebSocket listener: read from a token file, and made for the service.

`read_token` reads `--ws-token-file` as every secret is read (`files.read_private`: a regular file of at
most 4 KiB, opened without blocking, private to its owner) and says in one line what is wrong with it.
`ensure_token` gives the service its own token, `$CODEX_LIMITS_HOME/service-token` (0600), made on first
use; `bearer_headers` is what a client of this data directory sends on a ws:// upgrade.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final

TOKEN_NAME: Final = "service-token"


class TokenError(ValueError):
    """A token file we refuse; the text names the file and says why (never the token)."""


def token_path(home: Path) -> Path:
    return home / TOKEN_NAME


def read_token(path: Path) -> str:
    """The token in `path`: its one line, surrounding whitespace removed."""
    from app_server.files import FileRefused, read_private

    try:
        raw = read_private(path)
    except FileRefused as exc:
        raise TokenError(f"cannot use the token file {path}: {exc.reason}") from None
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"cannot use the token file {path}: it is not UTF-8") from None
    if not token:
        raise TokenError(f"the token file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise TokenError(f"cannot use the token file {path}: the token must be one line of visible characters")
    return token


def ensure_token(home: Path) -> Path:
    """`home`'s service token file, created (0600, 256 random bits) when missing; checked either way."""
    path = token_path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.path.lexists(path):
        # Written whole beside it, then linked into place: a concurrent starter sees no file or the whole token.
        tmp = home / f".{TOKEN_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another starter made it first: theirs is the token
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    read_token(path)
    return path


def bearer_headers(token_file: str | Path | None) -> dict[str, str]:
    """The `Authorization` header for a ws:// upgrade to a listener guarded by `token_file` ({} without one)."""
    if token_file is None:
        return {}
    return {"Authorization": f"Bearer {read_token(Path(token_file))}"}
