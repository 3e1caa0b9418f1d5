"""Cost of what each fresh pool read sets off in the service: `LiveUpdates.observe` (change check,
alert rules, usage samples to an in-memory store, notifications to a no-op `notify_all`).

Usage (from the repository root):

    .venv/bin/python -m benchmarks.live_observe [--reads N]

Every read differs from the one before, so every read sends an `accountPool/accountUpdated`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio
from pydantic import BaseModel

from app_server.pool.monitor import LiveUpdates
from app_server.pool.usage import UsageRecorder
from protocol.methods import Notification
from tests.support.live import WEEK, MemoryUsageStore, credit, summary, window

RESETS = 1_900_000_000


async def measure(reads: int) -> float:
    async def notify_all(kind: Notification, params: BaseModel) -> None:
        return None

    recorder = UsageRecorder(MemoryUsageStore(), retention_seconds=1e9)
    live = LiveUpdates(notify_all, codex_home=Path("/homes/alice"), recorder=recorder)
    items = [
        summary(
            primary=window(i % 100, RESETS),
            secondary=window(i % 50, RESETS, minutes=WEEK),
            credits=[credit("c1", RESETS)],
            refreshed_at=i,
        )
        for i in range(reads)
    ]
    start = time.perf_counter()
    for item in items:
        await live.observe(item)
    return (time.perf_counter() - start) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()
    per_read = anyio.run(measure, args.reads)
    print(f"LiveUpdates.observe: {per_read * 1e6:.1f} µs per read ({args.reads} reads, each one changed)")


if __name__ == "__main__":
    main()
