"""Every payload the reference server wrote in the recorded transcripts, grouped by what it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from protocol.jsonrpc import is_request_id
from tests.support.transcripts import all_transcripts


@dataclass(frozen=True)
class Sample:
    transcript: str
    kind: str  # a method name for results, a notification method for notifications
    payload: Any  # the `result` or the notification's `params`
    line: str


def samples() -> Iterator[Sample]:
    for transcript in all_transcripts():
        pending: dict[Any, str] = {}
        for event in transcript.events:
            if event.type == "client":
                try:
                    message = json.loads(event.data["line"])
                except ValueError:
                    continue
                if (
                    isinstance(message, dict)
                    and isinstance(message.get("method"), str)
                    and is_request_id(message.get("id", None))
                ):
                    pending[message["id"]] = message["method"]
            elif event.type == "server":
                line = event.data["line"]
                message = json.loads(line)
                if "method" in message:
                    yield Sample(transcript.name, message["method"], message["params"], line)
                elif "result" in message and message["id"] in pending:
                    yield Sample(transcript.name, pending.pop(message["id"]), message["result"], line)
                elif "error" in message:
                    pending.pop(message.get("id"), None)
