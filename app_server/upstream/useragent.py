"""The user agent string of CONTRACT §2.3, sent back by `initialize` and on every backend call."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import cache

from app_server import __version__
from app_server import env as environment

PRODUCT = "codex-limits"
DAEMON_CLIENT = "codex_app_server_daemon"
"""The client name for which upstream adds no `(<name>; <version>)` suffix (its own app-server daemon)."""


def is_header_value(text: str) -> bool:
    """What an HTTP header value may hold: no control characters except tab (non-ASCII is allowed)."""
    return all(ch == "\t" or (ch >= " " and ch != "\x7f") for ch in text)


def sanitize_header_value(text: str) -> str:
    return "".join(ch if is_header_value(ch) else "_" for ch in text)


@cache
def os_description() -> str:
    """`<os type> <os version>; <arch>` in the spirit of upstream's os_info output."""
    system = platform.system()
    if system == "Linux":
        name, version = _os_release()
    elif system == "Darwin":
        name, version = "Mac OS", platform.mac_ver()[0] or platform.release()
    elif system == "Windows":
        name, version = "Windows", platform.version()
    else:
        name, version = system or "Unknown", platform.release()
    return f"{name} {version}; {platform.machine() or 'unknown'}"


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    fields[key] = value.strip('"')
    except OSError:
        pass
    return fields.get("NAME", "Linux"), fields.get("VERSION_ID", platform.release())


def terminal(env: Mapping[str, str] | None = None) -> str:
    """The terminal the server runs in (`env.terminal`), made a valid header value."""
    return sanitize_header_value(environment.terminal(env))


# Rust's `char::is_whitespace` (Unicode White_Space), which upstream's `str::trim` uses. Python's `str.strip`
# also strips U+001C..U+001F, which Rust keeps.
_RUST_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _rust_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] in _RUST_WHITESPACE:
        start += 1
    while end > start and text[end - 1] in _RUST_WHITESPACE:
        end -= 1
    return text[start:end]


def user_agent(
    client_name: str | None = None, client_version: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """`codex-limits/<version> (<os>; <arch>) <terminal>[ (<name>; <version>)]`.

    Upstream puts its originator and version first; we put ours, so the backend sees honestly
    who is calling. The client suffix is added once a client has initialized, built as upstream
    builds it (CONTRACT §2.3): `<name>; <version>` trimmed of surrounding whitespace (an empty
    name and version give `(;)`), left out when nothing remains, and when the whole string is not
    a valid header value every character outside printable ASCII becomes `_` (`1\n0` -> `1_0`).
    Upstream's own daemon client (`codex_app_server_daemon`) gets no suffix, as upstream gives it none.
    """
    base = f"{PRODUCT}/{__version__} ({os_description()}) {terminal(env)}"
    if client_name is None or client_name == DAEMON_CLIENT:
        return base
    suffix = _rust_trim(f"{client_name}; {client_version or ''}")
    candidate = f"{base} ({suffix})" if suffix else base
    if is_header_value(candidate):
        return candidate
    return "".join(ch if " " <= ch <= "~" else "_" for ch in candidate)
