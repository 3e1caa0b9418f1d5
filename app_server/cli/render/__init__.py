"""What the operator commands show: pure functions from wire models to rich renderables, one module per view.

Nothing here does I/O or reads the clock: every function takes `now` (Unix seconds) and the
`width` it may use, so the same summaries render the same way in a test as in a terminal.
Below `WIDE` columns the tables fold (label, id, plan and status share one cell; reset times
are relative only); from `WIDE` on they add the plan, e-mail and absolute local times.

`words`, `times` and `cells` are the pieces the views share; `status`, `account`, `apply`, `history`,
`accounts` and `credits` are the views (`forecast`: the forecast lines of `status`). The names below
are the package's public face.
"""

from __future__ import annotations

from app_server.cli.plain.times import ago, duration, local_date, local_time, stamp, until
from app_server.cli.plain.words import (
    AVAILABLE,
    EXHAUSTED,
    NONE,
    OUTCOME_HEADLINE,
    OUTCOME_SENTENCE,
    REASON_LONG,
    REASON_SHORT,
    STATUS_TEXT,
    reason_words,
)
from app_server.cli.render.account import (
    account_detail,
    apply_prompt,
    available_credits,
    credit_to_spend,
    credit_words,
)
from app_server.cli.render.accounts import AccountRow, accounts_table
from app_server.cli.render.apply import apply_result, outcome_line, outcome_sentence, windows_reset
from app_server.cli.render.cells import (
    apply_cell,
    apply_possible,
    bar,
    saved_cell,
    saved_count,
    status_text,
    window_cell,
)
from app_server.cli.render.credits import credits_view
from app_server.cli.render.history import history_table
from app_server.cli.render.status import Row, Waiting, status_table
from app_server.cli.render.words import (
    CRAMPED,
    NARROW,
    UNKNOWN_CREDIT,
    WIDE,
    Summary,
    exhausted_windows,
    is_wide,
    next_step,
    readiness,
    usage_words,
    window_name,
    wire,
)

__all__ = [
    "AVAILABLE",
    "CRAMPED",
    "EXHAUSTED",
    "NARROW",
    "NONE",
    "OUTCOME_HEADLINE",
    "OUTCOME_SENTENCE",
    "REASON_LONG",
    "REASON_SHORT",
    "STATUS_TEXT",
    "UNKNOWN_CREDIT",
    "WIDE",
    "AccountRow",
    "Row",
    "Summary",
    "Waiting",
    "account_detail",
    "accounts_table",
    "ago",
    "apply_cell",
    "apply_possible",
    "apply_prompt",
    "apply_result",
    "available_credits",
    "bar",
    "credit_to_spend",
    "credit_words",
    "credits_view",
    "duration",
    "exhausted_windows",
    "history_table",
    "is_wide",
    "local_date",
    "local_time",
    "next_step",
    "outcome_line",
    "outcome_sentence",
    "readiness",
    "reason_words",
    "saved_cell",
    "saved_count",
    "stamp",
    "status_table",
    "status_text",
    "until",
    "usage_words",
    "window_cell",
    "window_name",
    "windows_reset",
    "wire",
]
