"""A worker the crash-safety test SIGKILLs at random moments: it edits accounts.toml and the ledger as fast
as it can, and reports each completed write on stdout.

    python -m tests.support.pool_worker DATA_DIR

Each round `n` (continuing from what is on disk) adds account `acct-<n>` (then prints `accounts <count>`),
starts apply `key-<n>` on it (`started <n>`), and finishes that apply (`finished <n>`). A killed worker
must leave both files holding the state of its last report or of the write it was in the middle of.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from app_server.pool.accounts import FILE_NAME, AccountsFile
from app_server.store.base import AccountKey
from app_server.store.sqlite import FILE_NAME as LEDGER_FILE
from app_server.store.sqlite import SqliteStore as Ledger
from protocol import ext
from protocol.v2 import ConsumeAccountRateLimitResetCreditOutcome as Outcome


def account_id(n: int) -> str:
    return f"acct-{n}"


def key(n: int) -> str:
    return f"key-{n}"


def summary(n: int, available: int) -> ext.AccountSummary:
    return ext.AccountSummary(
        account_id=account_id(n),
        label=f"Account {n}",
        codex_home=f"/homes/{n}",
        status=ext.AccountStatus.ACTIVE,
        reset_credits=ext.ResetCreditsOverview(available_count=available),
        reset_action=ext.ResetAction(enabled=available > 0, warning=ext.APPLY_WARNING),
    )


def response(n: int) -> ext.AccountPoolApplyResponse:
    return ext.AccountPoolApplyResponse(
        outcome=Outcome.RESET, before=summary(n, 1), after=summary(n, 0), applied_at=int(time.time())
    )


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(data_dir: Path) -> None:
    accounts = AccountsFile(data_dir / FILE_NAME, data_dir / "no-default")
    ledger = Ledger(data_dir / LEDGER_FILE)
    n = len(accounts.entries())
    # A round the previous worker left half done (killed after the account, before the apply) is redone
    # under the next number, so every round below starts from a consistent pair.
    report(f"ready {n}")
    while True:
        accounts.add(account_id(n), data_dir / "homes" / str(n), f"Account {n}")
        report(f"accounts {n + 1}")
        home = data_dir / "homes" / str(n)
        home.mkdir(parents=True, exist_ok=True)
        await ledger.start(key(n), AccountKey(f"home:{home}", home), account_id(n), None, int(time.time()), 1)
        report(f"started {n}")
        await ledger.finish(key(n), response(n), 0)
        report(f"finished {n}")
        n += 1


def main() -> None:
    anyio.run(run, Path(sys.argv[1]))


if __name__ == "__main__":
    main()
