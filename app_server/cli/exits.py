"""Exit statuses of `codex-limits`, what each one means (shown in `--help` and README.md), and the expected
failure that carries one (`CommandFailed`). Standard library only: the quick paths raise these too."""

from __future__ import annotations

from enum import IntEnum

TYPE_CHECKING = False  # `typing` costs the quick paths milliseconds at start-up
if TYPE_CHECKING:
    from typing import Any, Final

INVALID_REQUEST: Final = -32600
"""JSON-RPC's invalid-request code (`protocol.jsonrpc.INVALID_REQUEST`; a test keeps the two equal)."""
INTERNAL_ERROR: Final = -32603
"""JSON-RPC's internal-error code (`protocol.jsonrpc.INTERNAL_ERROR`)."""


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


class CommandFailed(Exception):
    """An expected failure: `message` is the one line shown on stderr, `code` the exit status.

    `payload`, when set, is the JSON object `--json` prints on stdout for this failure."""

    def __init__(self, code: Exit, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.payload = payload

    def __repr__(self) -> str:
        return f"CommandFailed(code={self.code!r}, message={self.message!r})"


def failure_of(code: int, message: str, data: Any, *, invalid: Exit = Exit.USAGE) -> CommandFailed:
    """An error answer as an exit status: refusals 3, invalid requests `invalid`, upstream failures 4."""
    payload = {"error": {"code": code, "message": message, "data": data}}
    if code == INVALID_REQUEST:
        refused = isinstance(data, dict) and "disabledReason" in data
        return CommandFailed(Exit.REFUSED if refused else invalid, message, payload)
    if code == INTERNAL_ERROR:
        return CommandFailed(Exit.UPSTREAM, message, payload)
    return CommandFailed(Exit.SERVER, f"the server answered error {code}: {message}", payload)


def protocol_failure(exc: BaseException) -> CommandFailed:
    """The server sent something no server of ours sends (a broken frame, not JSON): one line and exit 5."""
    return CommandFailed(Exit.SERVER, f"protocol failure: the server sent something unexpected ({exc})")


def internal_error(exc: BaseException) -> CommandFailed:
    """An unexpected error as one line and exit 5 (a bug, or the machine: a full disk under stdout, say)."""
    return CommandFailed(
        Exit.SERVER,
        f"internal error: {type(exc).__name__}: {exc} (a bug in codex-limits; run with -v for the traceback)",
    )
