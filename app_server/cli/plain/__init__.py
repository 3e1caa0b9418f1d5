"""What the operator commands say, as plain text, with the standard library only.

`words` works every sentence out from the wire JSON (the rich views in `render/` say the same things
through it); `times` says durations and clock times. The views for a pipe: `status` (with the one-line form
and the `--fail-above` gate), `account` (`refresh`), `history` and `credits`. Nothing here imports rich or
pydantic, so a command on a running service prints before either would have loaded.
"""

from __future__ import annotations

__all__ = ["account", "credits", "history", "status", "times", "words"]
