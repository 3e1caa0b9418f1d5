"""What each sink sends for one alert: the webhook's signed JSON body, ntfy's message and headers.

Pure functions, no I/O: the deliverer builds one `Outgoing` per alert and sink, and sends the very same
body bytes on every attempt (only the timestamp header and its signature are made per attempt).

The webhook signature is HMAC-SHA256 with the shared secret over `<timestamp>.<body>`, sent as
`X-Codex-Limits-Signature: sha256=<hex>` beside `X-Codex-Limits-Timestamp: <unix seconds>`; a receiver
recomputes it over the exact bytes it got (`verify`), rejects old timestamps, and de-duplicates on the
alert id (`X-Codex-Limits-Alert-Id`, also the body's `id`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Final

from protocol import ext

SIGNATURE_HEADER: Final = "X-Codex-Limits-Signature"
TIMESTAMP_HEADER: Final = "X-Codex-Limits-Timestamp"
ALERT_ID_HEADER: Final = "X-Codex-Limits-Alert-Id"
EVENT: Final = "accountPool/alert"
USER_AGENT: Final = "codex-limits-alerts"

NTFY_PRIORITY: Final = {ext.AlertSeverity.INFO: "3", ext.AlertSeverity.WARNING: "4", ext.AlertSeverity.CRITICAL: "5"}
"""ntfy's default (3), high (4) and urgent (5): an urgent one rings through do-not-disturb on most phones."""
_NTFY_TAGS: Final = {
    ext.AlertSeverity.INFO: "information_source",
    ext.AlertSeverity.WARNING: "warning",
    ext.AlertSeverity.CRITICAL: "rotating_light",
}


@dataclass(frozen=True)
class Outgoing:
    """One alert for one sink: its id, the exact body, and the headers every attempt carries."""

    alert_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def alert_id(alert: ext.AccountPoolAlert) -> str:
    """Stable for one alert: the same on every attempt and every sink, so a receiver can de-duplicate."""
    return _id(alert.to_wire())


def _id(wire: bytes) -> str:
    return hashlib.sha256(wire).hexdigest()[:32]


def webhook_body(alert: ext.AccountPoolAlert) -> Outgoing:
    """`{"id": …, "event": "accountPool/alert", "alert": <the notification's alert, as on the wire>}`."""
    wire = alert.to_wire()
    ident = _id(wire)  # hex digits: safe to splice into JSON as they are
    body = b'{"id":"' + ident.encode("ascii") + b'","event":"' + EVENT.encode("ascii") + b'","alert":' + wire + b"}"
    return Outgoing(ident, body, {ALERT_ID_HEADER: ident})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(outgoing: Outgoing, secret: bytes, timestamp: int) -> dict[str, str]:
    return {
        **outgoing.headers,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, outgoing.body),
    }


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (and the tests and the simulated sink): recompute, compare in constant time."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def ntfy_message(alert: ext.AccountPoolAlert, token: bytes | None = None) -> Outgoing:
    """A plain-text ntfy publish: the message as body, title, priority by severity, tags."""
    ident = alert_id(alert)
    headers = {
        "Title": _header_text(f"codex-limits: {alert.account_id} {alert.severity.value}"),
        "Priority": NTFY_PRIORITY[alert.severity],
        "Tags": f"{_NTFY_TAGS[alert.severity]},codex-limits,{alert.kind.value}",
        ALERT_ID_HEADER: ident,
    }
    if token is not None:
        headers["Authorization"] = "Bearer " + token.decode("utf-8", "replace")
    return Outgoing(ident, alert.message.encode("utf-8"), headers, "text/plain; charset=utf-8")


def _header_text(text: str) -> str:
    """`text` as an HTTP header value: ASCII as is, anything else as an RFC 2047 encoded word (ntfy decodes it)."""
    if text.isascii() and text.isprintable():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="
