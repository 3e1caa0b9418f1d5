"""Exit statuses of `codex-limits`, and what each one means (shown in `--help` and README.md)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """Exit statuses scripts can rely on; `EXIT_MEANING` says what each one means."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    REFUSED = 3
    UPSTREAM = 4
    SERVER = 5
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141


EXIT_MEANING: dict[Exit, str] = {
    Exit.OK: "success (`status` also when some account could not be read: the table or JSON says which)",
    Exit.CHECK_FAILED: "a check failed: `status --fail-above` found a window above the limit, or "
    "`schema --check` found schema files that differ from the models",
    Exit.USAGE: "usage error: bad arguments, an account id not in the pool, an invalid accounts.toml",
    Exit.REFUSED: "nothing done: refused (no saved reset, unknown credit id, needs sign-in, ...), declined at "
    "the prompt, no terminal to confirm on without --yes, upstream answered nothingToReset / noCredit, or "
    "`refresh` of an account that must sign in first",
    Exit.UPSTREAM: "upstream failure: the server answered -32603, or the account's read failed (`refresh`); "
    "after a failed apply the message says whether anything may have been spent",
    Exit.SERVER: "the server could not start, stopped, did not answer in time, or broke the protocol; "
    "or codex-limits itself failed unexpectedly (the message says so)",
    Exit.INTERRUPTED: "Ctrl-C (except in `status --watch`, `watch` and `dashboard`, where it is the normal way out "
    "and exits 0)",
    Exit.OUTPUT_CLOSED: "stdout was closed early (piped into `head`, say); nothing more is printed",
}
