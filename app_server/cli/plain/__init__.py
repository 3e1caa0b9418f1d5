"""What the operator commands say, as plain text, with the standard library only.

`words` works every sentence out from the wire JSON (the rich views in `render/` say the same things
through it); `times` says durations and clock times; `status` is the `status` view for a pipe, the one-line
form and the `--fail-above` gate. Nothing here imports rich or pydantic, so a command on a running service
prints before either would have loaded.
"""

from __future__ import annotations

__all__ = ["account", "history", "status", "times", "words"]
