"""The one root of codex-limits' errors, and what each edge reads off an error to answer with it.

Every error the project raises on purpose derives from `CodexLimitsError`. An error carries what the
edges need, so neither edge keeps a table of its own: `rpc_code`, `message` and `data` make the JSON-RPC
error answer (the dispatcher, `rpc.dispatcher.wire_error`); `http_status` and `http_error` the admin
API's error answer (`dashboard.errors`). A layer below the edges picks the branch of the tree that says
what went wrong (`RequestError`: the request cannot be served as asked; anything else: serving it
failed) and never names a JSON-RPC code itself.

CodexLimitsError             -32603 · 502 upstreamError: serving the request failed
├── ConfigError              our configuration cannot be used (config.py)
├── StoreError               the store cannot be used (store.base)
│   └── LedgerUnusable       the SQLite ledger file cannot be opened or read
├── GuardError               the marker directory beside a Codex home cannot be used (store.local_guard)
├── BackendError             an upstream HTTP call failed (upstream.errors)
├── PoolError                the pool's errors (pool.errors)
│   ├── GuardUnavailable     the claim cannot be taken before the consume: nothing is spent
│   ├── OutcomeUnknown       -32603 · 502 outcomeUnknown: the consume may have happened; re-send the key
│   ├── ApplyFailed          upstream refused the consume (a 4xx): nothing was spent
│   └── ReadFailed           an account's usage could not be read (its summary's `error`)
└── RequestError             -32600 · 400 invalidRequest: the request cannot be served as asked
    ├── AuthRequired         no usable ChatGPT sign-in for this call (upstream.errors)
    ├── KeyInUse             the store found the idempotency key taken (store.base)
    ├── ClaimHeld            the store found the upstream account claimed by another key
    ├── LockTimeout          the store's apply lock was held too long
    └── (PoolError)
        ├── UnknownAccount   -32600 · 404 accountNotFound
        ├── AccountsFileError  accounts.toml cannot be used as written
        ├── ApplyRefused     -32600 · 409 applyRefused (the reason's own code on the admin API)
        ├── KeyTaken         -32600 · 409 idempotencyKeyConflict
        ├── ApplyBusy        -32600 · 409 applyInProgress
        └── SignInRequired   an account cannot be read until someone signs in (its summary's `error`)

The admin API is a JSON-RPC client of the pool: it sees the wire answer, not the exception. So an error
whose HTTP answer differs from its branch's says so in its `data` (`errorCode`, `disabledReason`, or
`outcome: "unknown"`), and a test holds every class to that: the HTTP answer made from its wire answer
is its own `http_status` and `http_error`. Upstream's own methods never carry `data` (CONTRACT §3).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from protocol.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST

__all__ = ["ERROR_CODE", "CodexLimitsError", "RequestError"]

ERROR_CODE: Final = "errorCode"
"""The `error.data` member naming an error's stable code (the admin API's `code`) where nothing else does."""


class CodexLimitsError(Exception):
    """The root: serving the request failed (-32603; 502 `upstreamError` on the admin API).

    `message` is the text of the wire answer (upstream's exact text where the contract has one); it may
    say more than `str(error)`, which is what the logs show. `data` is the answer's `error.data`.
    """

    rpc_code: ClassVar[int] = INTERNAL_ERROR
    http_status: ClassVar[int] = 502
    http_error: ClassVar[str] = "upstreamError"

    @property
    def message(self) -> str:
        return str(self)

    @property
    def data(self) -> dict[str, Any] | None:
        return None


class RequestError(CodexLimitsError):
    """The request cannot be served as asked; the caller can change something (-32600; 400 `invalidRequest`)."""

    rpc_code: ClassVar[int] = INVALID_REQUEST
    http_status: ClassVar[int] = 400
    http_error: ClassVar[str] = "invalidRequest"
