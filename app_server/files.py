"""The files we read and write beside a Codex home or in the data directory.

One home for three rules of DESIGN.md: a file we read must be a regular file of bounded size (a FIFO
never blocks us, `/dev/zero` never fills memory), and a file holding a secret (a token file) must also be
private to its owner (`read_private`); a file we write is replaced atomically and stays 0600;
a lock file is 0600 whatever the umask, and is polled from the event loop rather than waited on in a thread.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio

if TYPE_CHECKING:  # filelock loads with the first lock, not at start-up (config.py reads files here)
    import filelock

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_SECRET_BYTES",
    "FileRefused",
    "acquire_polled",
    "lock_file",
    "read_private",
    "read_regular",
    "remove_stale_temp_files",
    "write_atomic",
]

MAX_FILE_BYTES: Final = 1 << 20
"""auth.json, config.toml and accounts.toml are a few hundred bytes; anything past 1 MiB is not one of them."""

MAX_SECRET_BYTES: Final = 4096
"""A token file holds one line of a few dozen characters."""

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)


class FileRefused(OSError):
    """A file exists but is not one we read: `reason` is `not a regular file` or `larger than N bytes`."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read_regular(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole content of `path`, which must be a regular file of at most `limit` bytes.

    Opened with O_NONBLOCK so opening a FIFO returns at once, then checked with fstat on the open descriptor
    (no race with a rename in between). Reads at most `limit + 1` bytes, so a file that grows while we read
    is refused rather than followed. Raises FileNotFoundError when absent, FileRefused when refused, and any
    other OSError from the system as it is.
    """
    return _read(path, limit, private=False, follow_symlinks=True)


def read_private(path: Path, limit: int = MAX_SECRET_BYTES, *, follow_symlinks: bool = True) -> bytes:
    """`read_regular` for a secret: also refused (`open to other users …`) when its mode gives group or
    other users any access, as ssh does with a private key; without `follow_symlinks`, a symlink is refused."""
    return _read(path, limit, private=True, follow_symlinks=follow_symlinks)


def _read(path: Path, limit: int, *, private: bool, follow_symlinks: bool) -> bytes:
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError:
        if not follow_symlinks and os.path.islink(path):
            raise FileRefused(path, "a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(path, "not a regular file")
        if private and info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise FileRefused(path, f"open to other users (mode {mode:04o}); run: chmod 600 {path}")
        if info.st_size > limit:
            raise FileRefused(path, f"larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(path, f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, tmp_prefix: str, tmp_suffix: str = ".tmp") -> None:
    """Replace `path` with `data`, mode 0600: a reader, or a crash at any point, sees the old file or the new one.

    The temporary file is `<tmp_prefix><pid>.<random><tmp_suffix>` beside `path`, so that
    `remove_stale_temp_files` can find what a killed writer left.
    """
    directory = path.parent
    tmp = directory / f"{tmp_prefix}{os.getpid()}.{os.urandom(4).hex()}{tmp_suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits; this also documents the intent
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(directory: Path, *, tmp_prefix: str, tmp_suffix: str = ".tmp") -> None:
    """Temp files left by a writer that was killed; only call while holding the file's lock."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(tmp_prefix) and name.endswith(tmp_suffix):
            (directory / name).unlink(missing_ok=True)


def lock_file(path: Path | str, *, timeout: float = -1) -> filelock.FileLock:
    """A cross-process lock on `path`, created 0600 whatever the umask (filelock fchmods an explicit mode)."""
    import filelock

    return filelock.FileLock(path, timeout=timeout, mode=0o600, thread_local=False)


async def acquire_polled(lock: filelock.FileLock, wait: float, *, interval: float = 0.02) -> bool:
    """Take `lock` within `wait` seconds; False if another holder kept it that long.

    Polled rather than blocked on: a non-blocking attempt costs microseconds and needs no worker thread, and
    the event loop keeps serving meanwhile. OSError (say, a read-only directory) propagates.
    """
    import filelock

    with anyio.move_on_after(wait):
        while True:
            try:
                lock.acquire(blocking=False)
                return True
            except filelock.Timeout:
                await anyio.sleep(interval)
    return False
