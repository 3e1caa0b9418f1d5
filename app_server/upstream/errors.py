"""What the upstream layer raises, with upstream's own texts for the wire (CONTRACT §7.3, §8.1).

CodexLimitsError
├── BackendError        an HTTP call failed: a status, a timeout, the transport, an undecodable body;
│                       -32603 with "failed to fetch codex rate limits: …" (a read) or "failed to consume
│                       rate limit reset: …" / "rate limit reset consume timed out" (a consume);
│                       defined in `backend`, where the failure kinds are
└── RequestError
    └── AuthRequired    no usable ChatGPT sign-in for this call: -32600
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from app_server.errors import RequestError

READ_FAILED: Final = "failed to fetch codex rate limits: "
CONSUME_FAILED: Final = "failed to consume rate limit reset: "
CONSUME_TIMED_OUT: Final = "rate limit reset consume timed out"


class Purpose(StrEnum):
    """What the call was for; part of upstream's message."""

    READ = "to read rate limits"
    CONSUME = "for rate limit reset credits"


class AuthRequired(RequestError):
    """No usable sign-in: `api_key` when auth.json holds an API key (ChatGPT sign-in needed),
    otherwise no auth.json, an unreadable one, or one without usable tokens."""

    def __init__(self, purpose: Purpose, *, api_key: bool, missing_file: bool = False) -> None:
        self.purpose = purpose
        self.api_key = api_key
        self.missing_file = missing_file
        kind = "chatgpt" if api_key else "codex account"
        super().__init__(f"{kind} authentication required {purpose.value}")
