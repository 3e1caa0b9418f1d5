"""Which accounts need a first sign-in, not a renewed one: the one file check behind the views' next-step hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def never_signed_in(summaries: list[Any], *, simulated: bool) -> set[str]:
    """Ids of accounts needing sign-in whose Codex home has no auth.json at all (never signed in there)."""
    if simulated:
        return set()
    return {
        s.account_id
        for s in summaries
        if str(getattr(s, "status", "")) == "reauthRequired"
        and s.codex_home
        and not (Path(s.codex_home) / "auth.json").exists()
    }
