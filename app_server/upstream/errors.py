"""What the upstream layer raises. The handlers turn each into a wire error in one table.

Exception
├── AuthRequired        no usable ChatGPT sign-in for this call (CONTRACT §8.1, with D5)
└── BackendError        an HTTP call failed: a status, a timeout, the transport, an undecodable body
                        (defined in `backend`, where the failure kinds are)
"""

from __future__ import annotations

from enum import StrEnum


class Purpose(StrEnum):
    """What the sign-in was needed for; part of upstream's message."""

    READ = "to read rate limits"
    CONSUME = "for rate limit reset credits"


class AuthRequired(Exception):
    """No usable sign-in: `api_key` when auth.json holds an API key (ChatGPT sign-in needed),
    otherwise no auth.json, an unreadable one, or one without usable tokens."""

    def __init__(self, purpose: Purpose, *, api_key: bool, missing_file: bool = False) -> None:
        self.purpose = purpose
        self.api_key = api_key
        self.missing_file = missing_file
        kind = "chatgpt" if api_key else "codex account"
        super().__init__(f"{kind} authentication required {purpose.value}")
