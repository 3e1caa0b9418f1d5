"""A process that holds one account's apply lock until it is killed: the crashed-holder test's victim.

Reads the database URL from its first stdin line (not argv: a password stays out of `ps`), takes the lock
for the identity named in argv[1], prints `locked` and waits forever.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from app_server.store.base import AccountKey
from app_server.store.postgres import PostgresStore


async def main(identity: str) -> None:
    url = sys.stdin.readline().strip()
    store = await PostgresStore.open(url)
    async with store.apply_lock(AccountKey(identity, Path("/nonexistent")), wait=30):
        print("locked", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
