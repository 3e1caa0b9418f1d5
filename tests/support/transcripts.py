"""Loader for the reference transcripts vendored in ``tests/fixtures/upstream/0.169.0`` (recorded on Codex 0.169.0).

A ``*.jsonl`` transcript is a ``scenario`` line (setup: config.toml, auth.json, env; placeholder legend), then
time-ordered events (``backend_config``, ``client``, ``server``, ``backend_request``, ``server_log``), then an
``end`` line. Every ``backend_config`` event lists the complete route table, so it *replaces* the previous one
(:func:`apply_backend_config`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEFAULT_TERM",
    "REMOVED_ENV_VARS",
    "TRANSCRIPTS_DIR",
    "Event",
    "RouteTable",
    "Transcript",
    "all_transcripts",
    "apply_backend_config",
    "load",
    "load_summary",
    "substitute",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_TERM = "xterm"
"""TERM used for every reference run unless the scenario says otherwise."""

REMOVED_ENV_VARS = ("OPENAI_API_KEY", "CODEX_API_KEY", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION")
"""Variables taken out of the inherited environment before a scenario's own ``env`` is applied."""


FIXTURES = REPO_ROOT / "tests" / "fixtures"
TRANSCRIPTS_DIR: Path = FIXTURES / "upstream" / "0.169.0"
"""The transcripts recorded on Codex CLI 0.169.0 (see tests/fixtures/README.md)."""


@dataclass
class Event:
    """One time-stamped transcript line; ``data`` is the whole JSON object (including ``type`` and ``t``)."""

    type: str
    t: float
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


class RouteTable(Protocol):
    """What :func:`apply_backend_config` needs (``MockBackend`` satisfies it)."""

    def set_routes(self, routes: Mapping[str, Any]) -> None: ...


@dataclass
class Transcript:
    """A parsed ``*.jsonl`` transcript."""

    name: str
    scenario: dict[str, Any]
    events: list[Event]
    end: dict[str, Any]
    path: Path | None = None

    # -- setup -----------------------------------------------------------------------------------------------

    @property
    def setup(self) -> dict[str, Any]:
        setup: dict[str, Any] = self.scenario.get("setup") or {}
        return setup

    @property
    def description(self) -> str:
        return str(self.scenario.get("description", ""))

    def config_toml(self, port: int) -> str:
        """The config.toml text with ``<PORT>`` substituted."""
        return substitute(str(self.setup.get("config_toml", "")), {"<PORT>": str(port)})

    @property
    def has_auth_file(self) -> bool:
        """Whether an auth.json file existed for the run (``auth_json: null`` means no file)."""
        return self.auth_json_text is not None

    @property
    def auth_json(self) -> Any | None:
        """The parsed auth.json object; None when there was no file or its text is not valid JSON."""
        if "auth_json" in self.setup:
            return self.setup["auth_json"]
        raw = self.setup.get("auth_json_raw")
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except ValueError:
                return None
        return None

    @property
    def auth_json_text(self) -> str | None:
        """The exact auth.json file content to write, or None when the run had no auth.json.

        ``setup.auth_json_raw`` (malformed cases such as ``40e``) is used verbatim; a JSON ``auth_json``
        value is written pretty-printed (2-space indent).
        """
        raw = self.setup.get("auth_json_raw")
        if isinstance(raw, str):
            return raw
        value = self.setup.get("auth_json")
        if value is None:
            return None
        return json.dumps(value, indent=2)

    @property
    def env(self) -> dict[str, str]:
        """The scenario's extra environment, placeholders (``<PORT>``) left in place."""
        env = self.setup.get("env") or {}
        return {str(key): str(value) for key, value in env.items() if value is not None}

    def env_for(self, port: int) -> dict[str, str]:
        """:attr:`env` with ``<PORT>`` substituted."""
        return {key: substitute(value, {"<PORT>": str(port)}) for key, value in self.env.items()}

    @property
    def term(self) -> str | None:
        """The TERM value of the run, or None when TERM was unset.

        ``env_notes``: "TERM=xterm unless env says otherwise". CONTRACT §2.3: the TERM_PROGRAM run (``05h``)
        had TERM unset, and the ``*_no_term`` run (``05i``, whose ``env`` is empty) had neither variable set.
        """
        env = self.setup.get("env") or {}
        if "TERM" in env:
            value = env["TERM"]
            return None if value is None else str(value)
        if "TERM_PROGRAM" in env or self.name.endswith("no_term"):
            return None
        return DEFAULT_TERM

    def process_env(
        self,
        port: int,
        base: Mapping[str, str] | None = None,
        codex_home: str | os.PathLike[str] | None = None,
    ) -> dict[str, str]:
        """A full child-process environment reproducing the run's setup.

        Starts from ``base`` (default ``os.environ``), drops :data:`REMOVED_ENV_VARS`, sets TERM per
        :attr:`term`, applies :meth:`env_for` and, when given, ``CODEX_HOME``.
        """
        env = dict(os.environ if base is None else base)
        for key in REMOVED_ENV_VARS:
            env.pop(key, None)
        term = self.term
        if term is not None:
            env["TERM"] = term
        env.update(self.env_for(port))
        if codex_home is not None:
            env["CODEX_HOME"] = os.fspath(codex_home)
        return env

    @property
    def backend_listening(self) -> bool:
        """False when nothing listened on the backend port (``19_connection_refused``)."""
        backend = self.setup.get("backend")
        return not (isinstance(backend, str) and "nothing listening" in backend)

    def write_codex_home(self, codex_home: Path, port: int) -> None:
        """Write config.toml and (when the run had one) auth.json, mode 0644, into ``codex_home``."""
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(self.config_toml(port), encoding="utf-8")
        text = self.auth_json_text
        auth_path = codex_home / "auth.json"
        if text is not None:
            auth_path.write_text(text, encoding="utf-8")
            auth_path.chmod(0o644)

    # -- events ----------------------------------------------------------------------------------------------

    def events_of(self, *types: str) -> list[Event]:
        """The events of the given types, in transcript order."""
        return [event for event in self.events if event.type in types]

    def client_lines(self) -> list[str]:
        """Exact stdin lines (without the newline the harness appends)."""
        return [str(event.data["line"]) for event in self.events_of("client")]

    def server_lines(self) -> list[str]:
        """Exact stdout lines (with placeholders such as ``<PORT>``)."""
        return [str(event.data["line"]) for event in self.events_of("server")]

    def backend_requests(self) -> list[dict[str, Any]]:
        """The ``backend_request`` records: ``method``, ``path``, ``headers`` ([[name, value]]), ``body``."""
        return [event.data for event in self.events_of("backend_request")]

    def backend_configs(self) -> list[Event]:
        """The ``backend_config`` events (each holds the complete route table under ``routes``)."""
        return self.events_of("backend_config")

    def server_logs(self) -> list[dict[str, Any]]:
        return [event.data for event in self.events_of("server_log")]

    @property
    def omitted_backend_requests(self) -> dict[str, int]:
        """Counts of the reference's unrelated background calls, by path (not part of the contract)."""
        omitted: dict[str, int] = self.scenario.get("other_backend_requests_omitted") or {}
        return omitted


def substitute(text: str, mapping: Mapping[str, str]) -> str:
    """Replace every placeholder key of ``mapping`` in ``text`` in one pass (longest key first).

    Replacement values are not themselves searched for placeholders.
    """
    if not mapping:
        return text
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(key) for key in keys))
    return pattern.sub(lambda match: mapping[match.group(0)], text)


def apply_backend_config(backend: RouteTable, event: Event) -> None:
    """Install a ``backend_config`` event: its route table replaces the current one."""
    if event.type != "backend_config":
        raise ValueError(f"not a backend_config event: {event.type}")
    backend.set_routes(event.data["routes"])


def _parse(path: Path) -> Transcript:
    text = path.read_text(encoding="utf-8")
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends inside JSON strings.
    records = [json.loads(line) for line in text.split("\n") if line.strip()]
    if not records or records[0].get("type") != "scenario":
        raise ValueError(f"{path.name}: first line is not a scenario")
    if records[-1].get("type") != "end":
        raise ValueError(f"{path.name}: last line is not an end record")
    scenario, body, end = records[0], records[1:-1], records[-1]
    events: list[Event] = []
    for record in body:
        kind = record.get("type")
        if not isinstance(kind, str) or kind in ("scenario", "end"):
            raise ValueError(f"{path.name}: unexpected record {record!r:.100}")
        events.append(Event(type=kind, t=float(record["t"]), data=record))
    return Transcript(name=str(scenario.get("name") or path.stem), scenario=scenario, events=events, end=end, path=path)


def load(name: str) -> Transcript:
    """Load a transcript by file name, with or without ``.jsonl`` (``"17_read_timing"``)."""
    stem = name.removesuffix(".jsonl")
    return _parse(TRANSCRIPTS_DIR / f"{stem}.jsonl")


def all_transcripts() -> list[Transcript]:
    """Every ``*.jsonl`` transcript, sorted by file name."""
    return [_parse(path) for path in sorted(TRANSCRIPTS_DIR.glob("*.jsonl"))]


def load_summary(name: str) -> dict[str, Any]:
    """Load one of the ``*.json`` summaries (``60_burst_pipelined_requests``, ``62_huge_lines``)."""
    stem = name.removesuffix(".json")
    summary: dict[str, Any] = json.loads((TRANSCRIPTS_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    return summary
